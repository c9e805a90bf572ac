"""``golem devnet``: a whole local market's chain in one command.

It starts the embedded EVM, serves it over JSON-RPC on 127.0.0.1, deploys GolemEscrow and
ProviderRegistry, and writes ``$GOLEM_HOME/devnet.json`` so that other processes (provider
agents, kernels, ``golem`` commands) find the chain. The file is removed when the devnet stops.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

from web3 import Web3

from .chain.deploy import DEFAULT_CLAIM_WINDOW, deploy
from .chain.embedded import DEV_ACCOUNT_COUNT, EmbeddedProvider, dev_keys
from .chain.network import DevAccount, Network
from .chain.rpc_server import RPCServer
from .chain.wallet import Wallet
from .errors import ConfigurationError
from .home import devnet_file

DEFAULT_PORT = 8545


class Devnet:
    """The embedded chain, served and deployed. Use as a context manager, or start/stop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        claim_window: int = DEFAULT_CLAIM_WINDOW,
        accounts: int = DEV_ACCOUNT_COUNT,
        connection_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.claim_window = claim_window
        self.accounts = accounts
        self.connection_file = connection_file or devnet_file()
        self.network: Network | None = None
        self._server: RPCServer | None = None

    def start(self) -> Network:
        running = running_devnet(self.connection_file)
        if running is not None:
            raise ConfigurationError(
                f"A devnet is already running at {running.rpc_url} (pid {running.pid}); "
                "use it, or stop it with `golem devnet stop`."
            )
        provider = EmbeddedProvider(accounts=self.accounts)
        try:
            self._server = RPCServer(provider, self.host, self.port).start()
        except OSError as error:
            raise ConfigurationError(
                f"Cannot listen on {self.host}:{self.port} ({error.strerror}); pick another port with --port."
            ) from None
        deployer = Wallet.dev(0)
        # Deploy in-process (no HTTP round trips); the server shares the same chain.
        deployed = deploy(
            Web3(provider), deployer.account, self._server.url, claim_window=self.claim_window, name="devnet"
        )
        keys = dev_keys(self.accounts)
        accounts = tuple(DevAccount(Wallet.from_key(k).address, k) for k in keys)
        self.network = dataclasses.replace(deployed, accounts=accounts, pid=os.getpid())
        self.network.save(self.connection_file)
        return self.network

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.network is not None:
            _remove_if_ours(self.connection_file, os.getpid())
            self.network = None

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_signalled(devnet: Devnet, on_ready=print) -> None:
    """Run ``devnet`` until SIGINT or SIGTERM, then stop it cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        network = devnet.start()
        on_ready(network)
        while not stop.wait(0.5):
            pass
    finally:
        devnet.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def running_devnet(connection_file: Path | None = None) -> Network | None:
    """The devnet described by the connection file, if its process is alive."""
    path = connection_file or devnet_file()
    if not path.exists():
        return None
    network = Network.load(path)
    if network.pid is None or not _alive(network.pid):
        return None
    return network


def stop_devnet(connection_file: Path | None = None, timeout: float = 15.0) -> Network | None:
    """Ask the running devnet to stop and wait until it has; returns what was stopped."""
    path = connection_file or devnet_file()
    network = running_devnet(path)
    if network is None:
        if path.exists():
            path.unlink()  # left behind by a devnet that was killed
        return None
    os.kill(network.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(network.pid) or not path.exists():
            return network
        time.sleep(0.1)
    raise ConfigurationError(f"The devnet (pid {network.pid}) did not stop within {timeout:.0f} s.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_ours(path: Path, pid: int) -> None:
    try:
        if Network.load(path).pid == pid:
            path.unlink()
    except (ConfigurationError, FileNotFoundError):
        pass
