"""A whole local market for tests: the embedded chain and provider agents as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from golem_jupyter.chain import Chain, Network, Wallet
from golem_jupyter.devnet import DEFAULT_LIE_FRACTION, Devnet, DevnetProvider
from golem_jupyter.ledger import Ledger
from golem_jupyter.provider.sandbox import SANDBOX_ENV, sandbox_available
from golem_jupyter.worker.meter import read_meter

CLAIM_GRACE = "1"
TESTS = Path(__file__).parent


@dataclass
class Market:
    """A running devnet with provider agents, and where their state lives."""

    home: Path
    network: Network
    providers: list[DevnetProvider]

    def chain(self, wallet: Wallet | None = None) -> Chain:
        return Chain.connect(self.network, wallet)

    def ledger(self) -> Ledger:
        return Ledger(self.home / "ledger.sqlite")

    def meter(self, provider: str, session_id: bytes | str) -> dict[str, float]:
        """The provider's own meter summed over its agreements in ``session_id``."""
        return provider_meter(self.home, provider, session_id)

    def log(self, provider: DevnetProvider) -> str:
        return Path(provider.log).read_text()


@contextlib.contextmanager
def local_market(
    home: Path,
    providers: int = 3,
    gpu_providers: int = 0,
    *,
    sandbox: str | None = None,
    options: tuple[str, ...] = (),
    liars: int = 0,
    lie_fraction: float = DEFAULT_LIE_FRACTION,
) -> Iterator[Market]:
    """Start a devnet of ``providers`` agents (``gpu_providers`` with a GPU) under ``home``; stop all after.

    ``liars``: the last N agents lie (``golem devnet --liars``), for ``lie_fraction`` of their tasks.

    The agents run their workers in the sandbox ``sandbox`` ("bwrap" or "none"); by default in
    bubblewrap where it works here, else (outside CI) with none, as ``GOLEM_SANDBOX`` says to an
    agent. ``options``: more ``golem provider run`` options for every agent (e.g. ``--memory``)."""
    saved = {name: os.environ.get(name) for name in ("GOLEM_HOME", "PYTHONPATH", SANDBOX_ENV)}
    os.environ["GOLEM_HOME"] = str(home)  # inherited by the provider processes
    if sandbox is None and not os.environ.get("CI"):
        sandbox = saved[SANDBOX_ENV] or ("bwrap" if sandbox_available() else "none")
    if sandbox is not None:
        os.environ[SANDBOX_ENV] = sandbox
    # Schedulers and workers import task functions from the test modules, as a real user's
    # processes import the user's modules.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved["PYTHONPATH"]]))
    devnet = Devnet(
        port=0,
        providers=providers,
        gpu_providers=gpu_providers,
        connection_file=home / "devnet.json",
        provider_options=("--claim-grace", CLAIM_GRACE, "--min-deposit-seconds", "1", *options),
        liars=liars,
        lie_fraction=lie_fraction,
    )
    try:
        network = devnet.start()
        yield Market(home, network, list(devnet.provider_agents))
    finally:
        devnet.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_pids(market: Market, client: Any) -> dict[str, int]:
    """The host's pid of each worker of ``client``'s cluster, by worker address.

    ``client.run(os.getpid)`` answers a sandboxed worker's pid inside its own PID namespace, which
    names some other process (or none) out here: look for the worker among the descendants of the
    agent that runs it instead (the ``dask worker`` process joined to this scheduler)."""
    scheduler = client.scheduler.address
    agents = {p.address: p.pid for p in market.providers}
    pids = {}
    for address, info in client.scheduler_info()["workers"].items():
        for process in psutil.Process(agents[str(info["name"])]).children(recursive=True):
            try:
                command = process.cmdline()
            except psutil.Error:
                continue
            if command[1:3] == ["-m", "distributed.cli.dask_worker"] and scheduler in command:
                pids[address] = process.pid
    return pids


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the providers' own view


def _session_hex(session_id: bytes | str) -> str:
    return session_id.hex() if isinstance(session_id, bytes) else session_id.lower().removeprefix("0x")


def agreement_directories(home: Path, provider: str) -> list[Path]:
    """Every agreement directory of ``provider``'s agent under ``home`` (one per agreement)."""
    return sorted(d for d in (home / "provider" / provider / "agreements").glob("*") if d.is_dir())


def session_ca_pem(cluster: Any) -> str:
    """The certificate of a cluster's session CA (no secret: each of its providers gets it)."""
    ca = cluster.security.tls_ca_file
    return ca if ca.lstrip().startswith("-----BEGIN") else Path(ca).read_text()


def agreement_with_ca(home: Path, provider: str, ca_pem: str) -> Path:
    """``provider``'s agreement directory for the session whose CA certificate is ``ca_pem``
    (found before the provider holds any voucher for it)."""
    found = [
        d
        for d in agreement_directories(home, provider)
        if (d / "ca.pem").is_file() and (d / "ca.pem").read_text() == ca_pem
    ]
    assert len(found) == 1, f"{provider} has {len(found)} agreements with this session CA"
    return found[0]


def _voucher(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "voucher.json").read_text())
    except (FileNotFoundError, ValueError):  # none yet, or being written
        return None


def _ca(directory: Path) -> str | None:
    try:
        return (directory / "ca.pem").read_text()
    except FileNotFoundError:
        return None


def session_agreements(home: Path, provider: str, session_id: bytes | str) -> list[Path]:
    """``provider``'s agreement directories in ``session_id``: those holding a voucher for it, and
    those (with no voucher, as when it was never paid) sharing the session's CA with any agreement,
    of any provider under ``home``, that holds one."""
    wanted = _session_hex(session_id)
    vouchered = [
        d
        for d in (home / "provider").glob("*/agreements/*")
        if (voucher := _voucher(d)) and _session_hex(voucher["sessionId"]) == wanted
    ]
    session_cas = {_ca(d) for d in vouchered} - {None}
    return [d for d in agreement_directories(home, provider) if d in vouchered or _ca(d) in session_cas]


def provider_meter(home: Path, provider: str, session_id: bytes | str) -> dict[str, float]:
    """What ``provider``'s own workers metered in ``session_id`` (their meter files, summed)."""
    total = {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "tasks": 0}
    for directory in session_agreements(home, provider, session_id):
        meter = read_meter(directory / "meter.json")
        for key in total:
            total[key] += meter[key]
    return total


def provider_voucher(home: Path, provider: str, session_id: bytes | str) -> int:
    """The cumulative amount of the best voucher ``provider`` holds for ``session_id`` (0 if none)."""
    vouchers = (_voucher(d) for d in session_agreements(home, provider, session_id))
    return max((int(v["cumulativeAmount"]) for v in vouchers if v), default=0)


@dataclass(frozen=True)
class Prices:
    """A provider's prices, in wei."""

    cpu_second: int
    gpu_second: int
    start_fee: int = 0

    def bill(self, meter: dict[str, float]) -> float:
        """What ``meter`` comes to (unrounded): its seconds at these rates, plus the start fee if it ran anything."""
        compute = meter["cpu_seconds"] * self.cpu_second + meter["gpu_seconds"] * self.gpu_second
        ran = meter["cpu_seconds"] > 0 or meter["gpu_seconds"] > 0
        return compute + (self.start_fee if ran else 0)


def bill_mismatch(
    paid: int, meter: dict[str, float], prices: Prices, graphs: int, cap: int | None = None
) -> str | None:
    """Why ``paid`` is not what ``meter`` comes to at ``prices`` (or ``cap``, if that is less), or None when it is.

    Each graph's price is rounded to whole wei once, so ``graphs`` wei of rounding are allowed,
    plus one part in a million for the order in which the two sides added up float seconds."""
    expected = prices.bill(meter) if cap is None else min(prices.bill(meter), cap)
    allowed = graphs + 1e-6 * expected
    if abs(paid - expected) <= allowed:
        return None
    return (
        f"paid {paid} wei, but its meter ({meter['cpu_seconds']!r} CPU-s, {meter['gpu_seconds']!r} GPU-s, "
        f"{meter['tasks']} tasks) at {prices} comes to {prices.bill(meter):.1f} wei"
        + ("" if cap is None else f", capped at {cap}")
        + f" (off by {paid - expected:+.1f}, {allowed:.1f} allowed for {graphs} graph(s))"
    )


def _await_agreement(check: Callable[[], str | None], timeout: float, what: str) -> None:
    """Poll ``check`` (None when the two sides agree, else why not) until they agree; fail with its last word."""
    deadline = time.monotonic() + timeout
    while (why := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout:.0f} s: {why}")
        time.sleep(0.1)


def _paid_graphs(ledger: Ledger, session_id: bytes | str, provider: str) -> list:
    graphs = ledger.graphs(session_id=session_id, limit=100_000)
    return [g for g in graphs if g.status != "abandoned" and any(p.provider == provider for p in g.payouts)]


def _ledger_amount(graphs: list, provider: str) -> int:
    return sum(p.amount for g in graphs for p in g.payouts if p.provider == provider)


def assert_paid_as_metered(
    market: Market,
    session_id: bytes | str,
    provider: str,
    *,
    ledger: Ledger | None = None,
    cap: int | None = None,
    timeout: float = 60,
) -> int:
    """Assert that ``provider`` was paid in ``session_id`` exactly what its own meter says it did.

    Paid: what the escrow credited the provider on-chain (``paid(sessionId, provider)``), which
    must equal the requestor's ledger (``ledger``, the market's by default) once its graphs are
    confirmed, and the voucher the provider holds. Metered: the seconds the provider's own workers
    wrote to their meter files, priced at the provider's offer (its agent's CPU and GPU prices and
    its registered start fee). Both sides trail the work a little (a meter file is rewritten every
    0.2 s, settlement is queued), so this polls until they agree and fails after ``timeout``
    seconds saying how they differ. ``cap``: the most the session could pay this provider (its
    deposit), when the meter may have run past it. Returns the amount paid.
    """
    ledger = ledger or market.ledger()
    chain = market.chain()
    agent = next(p for p in market.providers if p.address == provider)
    prices = Prices(agent.price_per_cpu_second, agent.price_per_gpu_second, chain.registry.offer_of(provider).start_fee)
    paid = 0

    def check() -> str | None:
        nonlocal paid
        paid = chain.escrow.paid(session_id, provider)
        graphs = _paid_graphs(ledger, session_id, provider)
        billed = _ledger_amount(graphs, provider)
        if paid != billed or any(g.status != "confirmed" for g in graphs):
            return f"the chain paid {paid} wei, the ledger's graphs pay {billed} ({[g.status for g in graphs]})"
        voucher = provider_voucher(market.home, provider, session_id)
        if voucher != paid:
            return f"the chain paid {paid} wei, the provider holds a voucher for {voucher}"
        return bill_mismatch(paid, provider_meter(market.home, provider, session_id), prices, len(graphs), cap)

    _await_agreement(check, timeout, f"{provider} was not paid as it metered")
    return paid


def assert_ledger_paid_as_metered(home: Path, ledger: Ledger, session_id: bytes | str, *, timeout: float = 60) -> int:
    """For a market that is gone (its chain with it): every provider of ``session_id`` in ``ledger``
    was paid, by the session's confirmed graphs, what its own meter under ``home`` says, at the
    prices it agreed to. Returns the total paid."""
    agreements = ledger.agreements(session_id)
    assert agreements, f"the ledger has no agreement in session {session_id!r}"
    total = 0
    for agreement in agreements:
        provider = agreement.provider
        prices = Prices(agreement.price_per_cpu_second, agreement.price_per_gpu_second, agreement.start_fee)
        graphs = _paid_graphs(ledger, session_id, provider)
        assert all(g.status == "confirmed" for g in graphs), [(g.status, g.error) for g in graphs]
        paid = _ledger_amount(graphs, provider)

        def check(provider=provider, paid=paid, prices=prices, graphs=graphs) -> str | None:
            voucher = provider_voucher(home, provider, session_id)
            if voucher != paid:
                return f"the ledger paid {paid} wei, the provider holds a voucher for {voucher}"
            return bill_mismatch(paid, provider_meter(home, provider, session_id), prices, len(graphs))

        _await_agreement(check, timeout, f"{provider} was not paid as it metered")
        total += paid
    return total
