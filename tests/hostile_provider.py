"""A hostile provider with a genuine certificate, for tests of the requestor's trust boundary.

:func:`hostile_provider` publishes the cheapest offer on a test market's registry (so a
``GolemCluster`` rents it first) and serves it with a fake provider agent: a threaded TCP server
that speaks the real signed protocol (propose -> accept with a CSR -> confirm with the session
CA's certificate -> started) with a dev wallet of its own. On ``confirm`` it writes the CA, the
certificate the requestor issued and its own private key to a directory of its own and starts a
REAL ``dask worker`` process with them (the flags of
:func:`golem_jupyter.provider.workers.worker_command`), with the preload modules and extra
worker arguments a test chooses, no sandbox and no provider meter: it is the provider's machine,
and the provider does what it likes there. Vouchers, terminations and anything else get an
``ack``; a termination stops its worker, and so does leaving the context.

The worker process inherits this process's environment (``local_market`` puts ``tests/`` on
``PYTHONPATH``, so a preload may be a module of this directory, e.g. :mod:`hostile_reports`)
plus ``env``.

This is a test double of a hostile party, not production code: it checks nothing the requestor
sends beyond the signatures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chainkit import free_port
from marketkit import Market

from golem_jupyter.chain import Offer, Wallet
from golem_jupyter.market.certificates import make_key_and_csr
from golem_jupyter.market.messages import TO_PROVIDER, ReplayGuard, decode_line, encode, sign_message, verify_message

HOSTILE_ACCOUNT = 7
"""The dev account the hostile provider signs with (the devnet's providers are accounts 1 to 3,
test_cluster_spec's silent provider is 6)."""

STOP_TIMEOUT = 5.0


@dataclass
class HostileAgreement:
    """One agreement the hostile provider accepted, and the worker it started for it."""

    agreement_id: bytes
    scheduler_address: str
    ca_certificate: str
    key_pem: str
    directory: Path
    certificate: str = ""
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "worker.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class HostileOptions:
    """What the hostile provider's workers run: see :func:`hostile_provider`."""

    preloads: tuple[str, ...] = ("hostile_reports",)
    worker_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    nthreads: int = 1


class HostileProvider(socketserver.ThreadingTCPServer):
    """The hostile provider's agent: accepts everything, starts a real worker on ``confirm``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, wallet: Wallet, chain_id: int, directory: Path, options: HostileOptions) -> None:
        super().__init__(("127.0.0.1", free_port()), _HostileHandler)
        self.wallet, self.chain_id = wallet, chain_id
        self.directory = directory
        self.options = options
        self.replay = ReplayGuard()
        self.kinds: list[str] = []
        """Every message kind the requestor sent, in order."""
        self.agreements: dict[bytes, HostileAgreement] = {}
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return self.wallet.address

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def worker_logs(self) -> str:
        """Every worker's log, one after the other (for assertion messages)."""
        return "\n".join(f"--- {a.log_path}\n{a.log()}" for a in self.agreements.values())

    # ------------------------------------------------------------------ the worker

    def worker_command(self, agreement: HostileAgreement) -> list[str]:
        """The real agent's worker command line, with this provider's preloads and extra arguments."""
        directory = agreement.directory
        command = [
            sys.executable, "-m", "distributed.cli.dask_worker", agreement.scheduler_address,
            "--name", self.address,
            "--nthreads", str(self.options.nthreads),
            "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
            "--tls-ca-file", str(directory / "ca.pem"),
            "--tls-cert", str(directory / "worker.pem"),
            "--tls-key", str(directory / "worker.key"),
            "--local-directory", str(directory / "scratch"),
            "--death-timeout", "3s",
        ]  # fmt: skip
        for preload in self.options.preloads:
            command += ["--preload", preload]
        return command + list(self.options.worker_args)

    def start_worker(self, agreement: HostileAgreement) -> None:
        directory = agreement.directory
        (directory / "scratch").mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_text(agreement.ca_certificate)
        (directory / "worker.pem").write_text(agreement.certificate)
        key = directory / "worker.key"
        key.write_text(agreement.key_pem)
        key.chmod(0o600)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.options.env}
        with agreement.log_path.open("ab") as log:
            agreement.process = subprocess.Popen(
                self.worker_command(agreement),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def stop_worker(self, agreement: HostileAgreement) -> None:
        process = agreement.process
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def stop_workers(self) -> None:
        for agreement in list(self.agreements.values()):
            self.stop_worker(agreement)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class _HostileHandler(socketserver.StreamRequestHandler):
    server: HostileProvider

    def handle(self) -> None:
        server = self.server
        with server.lock:  # the replay guard is not thread-safe
            message = verify_message(
                decode_line(self.rfile.readline().rstrip(b"\n")),
                chain_id=server.chain_id,
                recipient=server.wallet.address,
                kinds=TO_PROVIDER,
                replay=server.replay,
            )
            server.kinds.append(message.kind)
        body = message.body
        stop: HostileAgreement | None = None
        if message.kind == "propose":
            agreement_id = os.urandom(32)
            key_pem, csr_pem = make_key_and_csr(server.address)
            with server.lock:
                server.agreements[agreement_id] = HostileAgreement(
                    agreement_id,
                    body["schedulerAddress"],
                    body["caCertificate"],
                    key_pem,
                    server.directory / agreement_id.hex()[:16],
                )
            kind, answer = "accept", {"agreementId": agreement_id, "csr": csr_pem}
        elif message.kind == "confirm":
            agreement_id = body["agreementId"]
            agreement = server.agreements[agreement_id]
            agreement.certificate = body["certificate"]
            server.start_worker(agreement)
            kind, answer = "started", {"agreementId": agreement_id, "workerName": server.address}
        elif message.kind == "ping":
            kind, answer = "pong", {"endpoint": server.endpoint}
        else:
            agreement_id = body.get("agreementId", b"\0" * 32)
            if message.kind == "terminate":
                stop = server.agreements.get(agreement_id)
            kind, answer = "ack", {"agreementId": agreement_id, "detail": "ok"}
        signed = sign_message(
            server.wallet.account, chain_id=server.chain_id, kind=kind, recipient=message.sender, body=answer
        )
        self.wfile.write(encode(signed))
        self.wfile.flush()
        if stop is not None:
            server.stop_worker(stop)


@contextlib.contextmanager
def hostile_provider(
    market: Market,
    directory: Path,
    *,
    price_per_cpu_second: int = 1,
    preloads: Sequence[str] = ("hostile_reports",),
    worker_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    nthreads: int = 1,
    account: int = HOSTILE_ACCOUNT,
) -> Iterator[HostileProvider]:
    """A hostile provider on ``market`` (dev account ``account``), offering CPU time at
    ``price_per_cpu_second`` (the default, 1 wei, is the cheapest offer there is), whose workers
    run with ``--preload`` for each of ``preloads`` (modules of ``tests/`` or anything
    importable), ``worker_args`` appended to their command line and ``env`` added to their
    environment. Its agreements and workers' logs live under ``directory``. On leaving, its
    offer is withdrawn and its workers are stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    wallet = Wallet.dev(account)
    options = HostileOptions(tuple(preloads), tuple(worker_args), dict(env or {}), nthreads)
    server = HostileProvider(wallet, market.network.chain_id, directory, options)
    thread = threading.Thread(target=server.serve_forever, name="hostile-provider", daemon=True)
    thread.start()
    registry = market.chain(wallet).registry
    try:
        registry.publish_or_update(
            Offer(
                endpoint=server.endpoint, price_per_cpu_second=price_per_cpu_second, cpus=nthreads, memory_bytes=2**30
            )
        )
        yield server
    finally:
        try:
            registry.withdraw()
        finally:
            server.shutdown()
            server.server_close()
            server.stop_workers()
