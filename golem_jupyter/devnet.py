"""``golem devnet``: a whole local market in one command.

It starts the embedded EVM, serves it over JSON-RPC on 127.0.0.1, deploys GolemEscrow and
ProviderRegistry, and writes ``$GOLEM_HOME/devnet.json`` so that other processes (provider
agents, kernels, ``golem`` commands) find the chain. With ``providers=N`` it also starts N
provider agents as separate processes, each with its own dev key (accounts 1..N; account 0 is
the requestor's) and its own prices, and lists them in ``devnet-providers.json`` beside the
connection file. Both files are removed when the devnet stops.

``liars=N`` (``golem devnet --liars N``) makes the last N of those agents LIARS: their workers
return wrong values for ``lie_fraction`` of their tasks (:mod:`golem_jupyter.worker._liar`), so
that ``--verify`` has someone to catch. They ask the lowest prices (a cheat undercuts), so a
requestor renting the best offers rents them first. They are started through
:mod:`golem_jupyter.provider._devnet_liar` (``golem provider run`` cannot make a liar), log a
warning saying so, and are listed with ``"liar": true``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .chain._imports import Web3  # first: the eth libraries, keeping the recursion limit
from .chain.deploy import DEFAULT_CLAIM_WINDOW, deploy
from .chain.embedded import DEV_ACCOUNT_COUNT, EmbeddedProvider, dev_keys
from .chain.network import DevAccount, Network, write_json_atomic
from .chain.rpc_server import RPCServer
from .chain.wallet import Wallet
from .errors import ConfigurationError
from .home import devnet_file

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8545
BASE_CPU_PRICE = 10**9
"""Devnet provider i asks (1 + i/2) times this per CPU-second: distinct prices, a clear ranking. Liars
(``--liars N``, the last N agents) take the N cheapest prices, as a cheat undercutting the market would."""
BASE_GPU_PRICE = 10**10
PROVIDER_START_TIMEOUT = 60.0
DEFAULT_LIE_FRACTION = 0.5
"""The fraction of its tasks a devnet liar corrupts unless told otherwise."""


@dataclass(frozen=True)
class DevnetProvider:
    """A provider agent the devnet started."""

    address: str
    endpoint: str
    pid: int
    price_per_cpu_second: int
    price_per_gpu_second: int
    gpus: int
    log: str
    liar: bool = False
    """DEVNET ONLY: this agent's workers return wrong values for ``lie_fraction`` of their tasks."""
    lie_fraction: float = 0.0


def providers_file(connection_file: Path | None = None) -> Path:
    """Where the devnet with this connection file lists its provider agents."""
    return (connection_file or devnet_file()).with_name("devnet-providers.json")


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
        providers: int = 0,
        gpu_providers: int = 0,
        provider_options: tuple[str, ...] = (),
        liars: int = 0,
        lie_fraction: float = DEFAULT_LIE_FRACTION,
    ) -> None:
        if not 0 <= providers < accounts:
            raise ConfigurationError(f"A devnet with {accounts} dev accounts can start 0 to {accounts - 1} providers.")
        if not 0 <= gpu_providers <= providers:
            raise ConfigurationError("--gpu-providers cannot exceed --providers.")
        if not 0 <= liars <= providers:
            raise ConfigurationError("--liars cannot exceed --providers (the last N providers lie).")
        if not 0 <= lie_fraction <= 1:
            raise ConfigurationError(f"--lie-fraction must be from 0 to 1, not {lie_fraction}.")
        self.host = host
        self.port = port
        self.claim_window = claim_window
        self.accounts = accounts
        self.connection_file = connection_file or devnet_file()
        self.providers = providers
        self.gpu_providers = gpu_providers
        self.provider_options = provider_options
        self.liars = liars
        self.lie_fraction = lie_fraction
        self.network: Network | None = None
        self.provider_agents: list[DevnetProvider] = []
        self._server: RPCServer | None = None
        self._processes: list[subprocess.Popen] = []
        self._logdir: Path | None = None

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
        if self.providers:
            try:
                self._start_providers()
            except BaseException:
                self.stop()
                raise
        return self.network

    def _start_providers(self) -> None:
        """Start the provider agents in parallel and wait until each has published its offer."""
        self._logdir = Path(tempfile.mkdtemp(prefix="golem-devnet-"))
        pending = []
        for i in range(1, self.providers + 1):
            gpus = 1 if i > self.providers - self.gpu_providers else 0
            liar = i > self.providers - self.liars
            # Liars undercut: they take the cheapest prices, so a requestor renting the best offers rents them.
            rank = i - (self.providers - self.liars) if liar else i + self.liars
            cpu_price = BASE_CPU_PRICE * (2 + rank - 1) // 2
            gpu_price = BASE_GPU_PRICE * (2 + rank - 1) // 2
            ready = self._logdir / f"provider-{i}.ready"
            log = self._logdir / f"provider-{i}.log"
            if liar:  # DEVNET ONLY: an agent whose workers lie (see golem_jupyter.provider._devnet_liar)
                start = ["golem_jupyter.provider._devnet_liar", repr(self.lie_fraction)]
            else:
                start = ["golem_jupyter.cli", "provider", "run"]
            command = [
                sys.executable, "-m", *start,
                "--network", str(self.connection_file),
                "--dev-account", str(i),
                "--price-cpu", str(cpu_price),
                "--price-gpu", str(gpu_price),
                "--gpus", str(gpus),
                "--ready-file", str(ready),
                *_sandbox_options(),
                *self.provider_options,
            ]  # fmt: skip
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            self._processes.append(process)
            pending.append((process, ready, log, cpu_price, gpu_price, gpus, liar))
        deadline = time.monotonic() + PROVIDER_START_TIMEOUT
        for process, ready, log, cpu_price, gpu_price, gpus, liar in pending:
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise ConfigurationError(f"Provider agent (pid {process.pid}) did not start:\n{tail}")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            self.provider_agents.append(
                DevnetProvider(
                    info["address"],
                    info["endpoint"],
                    process.pid,
                    cpu_price,
                    gpu_price,
                    gpus,
                    str(log),
                    liar=liar,
                    lie_fraction=self.lie_fraction if liar else 0.0,
                )
            )
        write_json_atomic(providers_file(self.connection_file), [dataclasses.asdict(p) for p in self.provider_agents])

    def _stop_providers(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes = []
        self.provider_agents = []
        providers_file(self.connection_file).unlink(missing_ok=True)
        if self._logdir is not None:  # the agents' logs live as long as the agents
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None

    def stop(self) -> None:
        if self._processes:
            self._stop_providers()
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
    if network.pid is None or not process_alive(network.pid):
        return None
    return network


def running_providers() -> list[DevnetProvider]:
    """The provider agents the running devnet started, those still alive."""
    path = providers_file()
    if not path.exists() or running_devnet() is None:
        return []
    return [p for p in (DevnetProvider(**d) for d in json.loads(path.read_text())) if process_alive(p.pid)]


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
        if not process_alive(network.pid) or not path.exists():
            return network
        time.sleep(0.1)
    raise ConfigurationError(f"The devnet (pid {network.pid}) did not stop within {timeout:.0f} s.")


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts; a zombie does too)."""
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


def _sandbox_options() -> tuple[str, ...]:
    """The devnet's own agents sandbox requestors' code where bubblewrap runs. Where it cannot, they
    serve unconfined (``--no-sandbox``): on a devnet the requestor is the machine's own user, and
    the offers say ``"sandbox": "none"``. An operator's ``GOLEM_SANDBOX`` decides otherwise."""
    from .provider.sandbox import SANDBOX_ENV, sandbox_unavailable_reason

    if os.environ.get(SANDBOX_ENV) or sandbox_unavailable_reason() is None:
        return ()
    logger.info("The devnet's providers run requestors' code unconfined: %s", sandbox_unavailable_reason())
    return ("--no-sandbox",)
