"""Which chain to talk to, and a checked connection to it.

A :class:`Network` is everything a process needs to find the market: the JSON-RPC URL, the
chain id it expects there, and the two contract addresses. It comes from

* ``$GOLEM_NETWORK`` when nothing is given and it is set (``golem run`` sets it for its kernel),
* the running devnet's connection file (``$GOLEM_HOME/devnet.json``) when nothing is given,
* a connection file given by path, or
* a JSON-RPC URL, whose contracts are looked up in the deployments recorded per chain id
  (``$GOLEM_HOME/deployments.json``, written by ``golem deploy``).

:func:`connect` checks before anything is sent that the node answers, that its chain id is the
recorded one, and that the contracts are really there.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from web3 import Web3

from ..errors import ChainMismatch, ConfigurationError, NetworkUnreachable
from ..home import devnet_file, golem_home
from .types import as_address

RPC_TIMEOUT = 10.0
NETWORK_ENV = "GOLEM_NETWORK"
"""A JSON-RPC URL or connection file: the network used when none is named."""


@dataclass(frozen=True)
class DevAccount:
    """A funded development account of a devnet. The key is not shown in ``repr``."""

    address: str
    private_key: str = field(repr=False)


@dataclass(frozen=True)
class Network:
    """Where the chain answers and where the contracts are."""

    rpc_url: str
    chain_id: int
    escrow: str
    registry: str
    name: str = "custom"
    deployed_at_block: int = 0
    accounts: tuple[DevAccount, ...] = ()
    pid: int | None = None
    """Process serving the chain, for a devnet."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["accounts"] = [asdict(a) for a in self.accounts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "connection data") -> Network:
        try:
            return cls(
                rpc_url=str(data["rpc_url"]),
                chain_id=int(data["chain_id"]),
                escrow=as_address(data["escrow"], "escrow address"),
                registry=as_address(data["registry"], "registry address"),
                name=str(data.get("name", "custom")),
                deployed_at_block=int(data.get("deployed_at_block", 0)),
                accounts=tuple(DevAccount(a["address"], a["private_key"]) for a in data.get("accounts", [])),
                pid=data.get("pid"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigurationError(f"{source} is not a valid connection file: {error}") from None

    def save(self, path: Path) -> None:
        """Write atomically (readers never see half a file), readable by this user only."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> Network:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"No connection file at {path}.") from None
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"{path} is not JSON: {error}") from None
        return cls.from_json(data, str(path))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def deployments_file() -> Path:
    return golem_home() / "deployments.json"


def recorded_deployments() -> dict[str, Any]:
    path = deployments_file()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{path} is damaged ({error}); remove it and deploy again.") from None


def record_deployment(network: Network) -> None:
    """Remember the contracts of ``network`` under its chain id."""
    data = recorded_deployments()
    data[str(network.chain_id)] = {k: v for k, v in network.to_json().items() if k not in ("accounts", "pid")}
    write_json_atomic(deployments_file(), data)


def resolve(spec: Network | str | Path | None = None) -> Network:
    """A :class:`Network` from a Network, a connection file, a JSON-RPC URL, ``$GOLEM_NETWORK``, or the devnet."""
    if isinstance(spec, Network):
        return spec
    if spec is None and os.environ.get(NETWORK_ENV):
        spec = os.environ[NETWORK_ENV]
    if spec is None:
        path = devnet_file()
        if not path.exists():
            raise ConfigurationError(
                f"No network given and no devnet running (no {path}). Start one with `golem devnet`, "
                "or pass a JSON-RPC URL or a connection file."
            )
        return Network.load(path)
    text = str(spec)
    if text.startswith(("http://", "https://")):
        chain_id = chain_id_at(web3_for(text), text)
        recorded = recorded_deployments().get(str(chain_id))
        if recorded is None:
            raise ConfigurationError(
                f"No golem-jupyter contracts are recorded for chain {chain_id} at {text}; "
                f"deploy them first with `golem deploy --rpc-url {text}`."
            )
        return Network.from_json({**recorded, "rpc_url": text}, str(deployments_file()))
    return Network.load(text)


def connect(network: Network) -> Web3:
    """A Web3 for ``network`` after checking that the node answers with the expected chain."""
    w3 = web3_for(network.rpc_url)
    chain_id = chain_id_at(w3, network.rpc_url)
    if chain_id != network.chain_id:
        raise ChainMismatch(
            f"The node at {network.rpc_url} serves chain {chain_id}, but the contracts were recorded on "
            f"chain {network.chain_id}; nothing was sent. Use the right URL or deploy again."
        )
    for name, address in (("GolemEscrow", network.escrow), ("ProviderRegistry", network.registry)):
        if not w3.eth.get_code(address):
            raise ChainMismatch(
                f"There is no {name} at {address} on chain {chain_id} (was the chain reset?); "
                "deploy the contracts again or restart the devnet."
            )
    return w3


def web3_for(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT}))


def chain_id_at(w3: Web3, url: str) -> int:
    try:
        return w3.eth.chain_id
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise NetworkUnreachable(
            f"No chain answers at {url}. Start one with `golem devnet`, or check the URL and that the node runs."
        ) from error
