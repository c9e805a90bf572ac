"""Where ``%%golem`` cells run: a Dask client on the market (a GolemCluster) or on a local cluster.

A :class:`MarketSession` rents providers for the notebook and pays for each graph; it may own
an embedded devnet that ``%golem connect`` started because none was running. A
:class:`LocalSession` (``--local``) runs the same graphs on worker processes of this machine,
with no market and no money; its scheduler runs in a subprocess too, because the kernel's
restricted decoder must stay in force while a market session is open.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from distributed import Client

from ..scheduler.progress import CellProgress, read_progress
from .receipts import Progress, ProviderProgress, Receipt, ReceiptLine, Verified

logger = logging.getLogger(__name__)

SETTLEMENT_WATCH_SECONDS = 300.0
REPORT_TIMEOUT = 60.0
"""How long a receipt or ``%golem status`` waits for the ``reportFault`` transactions of providers caught
so far (mined in seconds on the devnet): after it, they show once mined."""


@dataclass(frozen=True)
class Connection:
    """What ``%golem connect`` asked for."""

    network: str | None = None
    providers: int = 2
    gpu: bool = False
    budget: int = 10**16  # 0.01 ETH, what `%golem connect --budget` defaults to
    max_price_cpu: int | None = None
    max_price_gpu: int | None = None
    sandbox: str | None = None
    """The weakest sandbox tier acceptable (``GolemCluster``'s ``sandbox``); None: any."""
    verify: float = 0.0
    """The fraction of tasks checked (``GolemCluster``'s ``verify``); a cell's ``--verify`` overrides it."""
    allow_reported: bool = False
    """Rent providers this ledger recorded a wrong result of, too (``GolemCluster``'s ``allow_reported``)."""


class Session:
    """A Dask client the magic submits cell graphs to."""

    kind = "session"
    client: Client

    def threads(self) -> int:
        return max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))

    def _install_progress(self) -> None:
        self.client.register_plugin(CellProgress(), name=CellProgress.name)

    def progress(self, token: str, total: int, started: float) -> Progress:
        state = self.client.run_on_scheduler(read_progress, token=token)
        providers = tuple(ProviderProgress(name, d, r) for name, (d, r) in sorted(state["workers"].items()))
        return Progress(
            total=total,
            done=state["done"],
            erred=state["erred"],
            providers=providers,
            elapsed=time.monotonic() - started,
            spent=max(0, round(state["spent"])),
            budget_left=self.budget_left(),
        )

    def budget_left(self) -> int | None:
        return None

    def faults(self) -> int:
        """How many providers verification voted down in this session so far."""
        return 0

    def receipt(self, collect_key: str, n_tasks: int, elapsed: float, note: str) -> Receipt:
        return Receipt((), 0, n_tasks, elapsed, "local", note=note)

    def watch_settlement(self, receipt: Receipt, on_change: Any) -> None:
        """Call ``on_change(receipt)`` when the graph's settlement moves on (market sessions only)."""

    def close(self) -> None:
        raise NotImplementedError


class LocalSession(Session):
    """Worker processes on this machine; the scheduler in a subprocess."""

    kind = "local"

    def __init__(self, n_workers: int = 2, threads_per_worker: int = 1) -> None:
        from distributed.deploy.subprocess import SubprocessCluster

        self.cluster = SubprocessCluster(
            host="127.0.0.1",
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            scheduler_kwargs={"dashboard": False},
            worker_kwargs={"dashboard": False},
        )
        self.client = Client(self.cluster, set_as_default=False)
        self._install_progress()

    def describe(self) -> str:
        return f"local cluster at {self.cluster.scheduler_address} ({self.threads()} threads)"

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class MarketSession(Session):
    """Providers rented on the market through a :class:`GolemCluster`."""

    kind = "market"

    def __init__(self, connection: Connection, *, devnet: Any = None, network: Any = None) -> None:
        from ..requestor.cluster import GolemCluster

        self.connection = connection
        self.devnet = devnet
        self._watched: list[list[Any]] = []
        self._watch_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.cluster = GolemCluster(
            n_providers=connection.providers,
            gpu=connection.gpu,
            budget=connection.budget,
            max_price_cpu=connection.max_price_cpu,
            max_price_gpu=connection.max_price_gpu,
            sandbox=connection.sandbox,
            verify=connection.verify,
            allow_reported=connection.allow_reported,
            network=network if network is not None else connection.network,
            # Jupyter tells a kernel which notebook it serves (golem run too): the ledger says so.
            label=os.environ.get("JPY_SESSION_NAME") or "notebook",
            quiet=True,
        )
        try:
            self.client = Client(self.cluster, set_as_default=not connection.gpu)
            self._install_progress()
        except BaseException:
            self.cluster.close()
            raise

    @property
    def ledger(self) -> Any:
        return self.cluster.ledger

    def describe(self) -> str:
        c = self.cluster
        running = [r for r in c.rentals.values() if r.serving]
        return (
            f"{len(running)} {'GPU ' if self.connection.gpu else ''}provider(s) on {c.chain.network.name} "
            f"(chain {c.chain.network.chain_id}), session 0x{c.session_id.hex()}"
        )

    def budget_left(self) -> int | None:
        return self.cluster.remaining

    def faults(self) -> int:
        # Providers, not faults: a check of the first graph judged late can vote a provider down
        # again once it is gone, and that says nothing of a graph that ran without it.
        verification = self.cluster.verification
        return len(verification.outvoted) if verification is not None else 0

    def graph_for(self, collect_key: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The metered graph whose output is ``collect_key``, once the cluster has recorded it."""
        payments = self.cluster.payments
        return payments.graph_with_output(collect_key, timeout) if payments is not None else None

    def receipt(self, collect_key: str, n_tasks: int, elapsed: float, note: str) -> Receipt:
        graph = self.graph_for(collect_key)
        if graph is None:
            return Receipt((), 0, n_tasks, elapsed, "nothing to pay", budget_left=self.cluster.remaining, note=note)
        lines = tuple(
            ReceiptLine(provider, usage["cpu_seconds"], usage["gpu_seconds"], usage["amount"])
            for provider, usage in sorted(graph["payouts"].items())
        )
        if not graph.get("paid"):
            status, tx_hash = "nothing to pay", None
        else:
            record = self.cluster.ledger.graph(graph["graph_id"])  # None until the collector has written it
            status = record.status if record is not None else "pending"
            tx_hash = record.tx_hash if record is not None else None
            lines = _paid_lines(graph["paid_amounts"], lines)
        return Receipt(
            lines,
            graph["total"],
            graph["n_tasks"],
            elapsed,
            status,
            graph_id=graph["graph_id"],
            tx_hash=tx_hash,
            budget_left=self.cluster.remaining,
            note=note,
            verification=self._verified(graph),
        )

    def _verified(self, graph: dict[str, Any]) -> Verified | None:
        """What verification did in ``graph`` (None if nothing was checked), the providers reported in it too."""
        counts = graph.get("verification") or {}
        graph_id = graph["graph_id"].removeprefix("0x")
        self.cluster.wait_for_reports(REPORT_TIMEOUT)
        reported = tuple((f["provider"], f["tx_hash"]) for f in self.cluster.faults if f["graph_id"] == graph_id)
        if not counts.get("checked") and not reported:
            return None
        return Verified(
            counts.get("checked", 0), counts.get("reruns", 0), counts.get("mismatches", 0), counts.get("cost", 0),
            reported,
        )  # fmt: skip

    def watch_settlement(self, receipt: Receipt, on_change: Any) -> None:
        if receipt.graph_id is None or receipt.status in ("confirmed", "nothing to pay"):
            return
        with self._watch_lock:
            self._watched.append([receipt, on_change, time.monotonic() + SETTLEMENT_WATCH_SECONDS])
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="golem-receipts", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        """One thread per session tells each receipt when its graph's settlement moves on."""
        ledger = self.cluster.ledger
        while True:
            with self._watch_lock:
                now = time.monotonic()
                self._watched = [w for w in self._watched if w[2] > now]
                if not self._watched:
                    self._watcher = None
                    return
                watched = list(self._watched)
            for entry in watched:
                receipt, on_change, _ = entry
                record = ledger.graph(receipt.graph_id)
                if record is not None and (record.status, record.tx_hash) != (receipt.status, receipt.tx_hash):
                    entry[0] = receipt = replace(receipt, status=record.status, tx_hash=record.tx_hash)
                    on_change(receipt)
                    if record.status == "confirmed":
                        entry[2] = 0.0
            time.sleep(0.25)

    def close(self) -> None:
        try:
            self.client.close()
            self.cluster.close()
        finally:
            if self.devnet is not None:
                self.devnet.stop()
                self.devnet = None


def _paid_lines(paid: dict[str, int], metered: tuple[ReceiptLine, ...]) -> tuple[ReceiptLine, ...]:
    """What each provider is paid (start fees included, capped by the deposit) in place of metered amounts."""
    return tuple(
        ReceiptLine(line.provider, line.cpu_seconds, line.gpu_seconds, paid.get(line.provider, 0)) for line in metered
    )


def no_gpu_message(offers: list[Any]) -> str:
    return (
        f"No GPU provider is on the market ({len(offers)} offer(s), none with a GPU), so `--gpu` cannot run. "
        "Run the cell without --gpu (xp is NumPy there), or start one with `golem devnet --gpu-providers 1` "
        "on a machine with an NVIDIA GPU."
    )


__all__ = ["Connection", "LocalSession", "MarketSession", "Session", "no_gpu_message"]
