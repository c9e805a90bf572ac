"""What a ``%%golem`` cell reports while its graph runs, and the receipt when it ends: plain data.

The session (:mod:`.session`) builds these from the scheduler's counts and the requestor's
payments; the views (:mod:`.display`) render them as text or widgets. Amounts are integers in
wei throughout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderProgress:
    """One provider's share of a running graph."""

    provider: str  # provider address (0x...40 hex) or, for a local cluster, a worker name
    done: int  # tasks of this graph finished on this provider
    running: int  # tasks of this graph executing there now


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running graph."""

    total: int  # tasks in the graph
    done: int  # finished (all providers)
    erred: int
    providers: tuple[ProviderProgress, ...]
    elapsed: float  # seconds since the graph was submitted
    spent: int  # wei metered for this graph so far
    budget_left: int | None  # wei the session had left when the graph started; None on a local cluster


@dataclass(frozen=True)
class ReceiptLine:
    """What one provider is paid for a graph."""

    provider: str
    cpu_seconds: float
    gpu_seconds: float
    amount: int  # wei


@dataclass(frozen=True)
class Verified:
    """What ``--verify`` did in a graph (DESIGN.md section 6)."""

    checked: int  # tasks whose result was held and compared with a re-run
    reruns: int  # re-runs on other providers (a referee's included)
    mismatches: int  # checks whose results disagreed: a referee decided
    cost: int  # wei the re-runs cost (paid to the providers that ran them, in this graph's total)
    reported: tuple[tuple[str, str | None], ...] = ()  # (provider, reportFault transaction) voted down

    def sentence(self) -> str:
        parts = [f"{self.checked} task{'s' if self.checked != 1 else ''} checked"]
        if self.mismatches:
            parts.append(f"{self.mismatches} mismatch{'es' if self.mismatches != 1 else ''} refereed")
        for provider, tx_hash in self.reported:
            parts.append(f"{provider} reported" + (f" (tx {tx_hash})" if tx_hash else " (not on-chain)"))
        return ", ".join(parts)


@dataclass(frozen=True)
class Receipt:
    """What a graph cost, and where its payment stands.

    ``status`` is one of "local" (ran on a local cluster, no money), "nothing to pay",
    "pending", "submitted", "confirmed" or "failed" (the settlement transaction failed and is
    retried).
    """

    lines: tuple[ReceiptLine, ...]
    total: int  # wei
    n_tasks: int
    elapsed: float
    status: str
    graph_id: str | None = None  # 0x + 64 hex
    tx_hash: str | None = None  # 0x + 64 hex, once known
    budget_left: int | None = None  # wei left in the session after this graph
    note: str = ""  # e.g. "Interrupted; what ran is paid."
    verification: Verified | None = None  # None: nothing was checked
