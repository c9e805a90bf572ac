"""What the ledger records: statuses, rows as data classes, and its one error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GolemError
from ..market.agreements import AgreementStatus

SESSION_STATUSES = ("opening", "open", "closing", "closed", "failed")
AGREEMENT_STATUSES = tuple(status.value for status in AgreementStatus)
"""What an agreement's ``status`` column holds: the values of :class:`~golem_jupyter.market.AgreementStatus`."""
GRAPH_STATUSES = ("pending", "submitted", "confirmed", "failed", "abandoned")
FINAL_GRAPH_STATUSES = ("confirmed", "abandoned")
UNSETTLED_GRAPH_STATUSES = ("pending", "submitted", "failed")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")


class LedgerError(GolemError):
    """A ledger write conflicts with what is recorded (a duplicate, an unknown id, a final status)."""


@dataclass(frozen=True)
class Payout:
    """What one provider is owed for one graph, and the session's cumulative voucher amount after it."""

    provider: str
    cpu_seconds: float
    gpu_seconds: float
    amount: int
    cumulative: int


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    network: str
    chain_id: int
    escrow: str
    requestor: str
    token: str
    budget: int
    deadline: int
    tx_hash: str | None
    status: str
    label: str | None
    run_id: str | None
    """The run whose kernel opened this session, if any (not necessarily a run in this ledger)."""
    created_at: float
    updated_at: float
    close_tx: str | None
    refund: int | None
    spent: int
    """Sum of payouts of this session's graphs that are not abandoned."""
    settled: int
    """Sum of payouts of this session's confirmed graphs."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    notebook: str
    output: str
    kernel: str
    parameters: dict[str, Any]
    network: str | None
    budget: int | None
    status: str
    exit_code: int | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    spent: int
    """Sum of the totals of the graphs that are not abandoned, over the sessions of this run."""
    settled: int
    """Sum of the totals of the confirmed graphs, over the sessions of this run."""
    sessions: int
    """How many sessions carry this run's id."""


@dataclass(frozen=True)
class AgreementRecord:
    session_id: str
    provider: str
    endpoint: str
    price_per_cpu_second: int
    price_per_gpu_second: int
    start_fee: int
    gpus: int
    worker_name: str
    status: AgreementStatus
    reason: str | None
    created_at: float
    updated_at: float
    agreement_id: str | None = None
    """The provider's id of the agreement (0x-hex; None in ledgers written before it was recorded)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", AgreementStatus(self.status))


@dataclass(frozen=True)
class GraphRecord:
    graph_id: str
    session_id: str
    label: str | None
    n_tasks: int
    result_root: str
    total: int
    status: str
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    error: str | None
    attempts: int
    created_at: float
    updated_at: float
    payouts: tuple[Payout, ...]
    seq: int | None = None
    """Its settlement number in the escrow session, once a settlement was prepared (None before)."""
    verification: dict[str, int] | None = None
    """What verification did in it: ``checked``, ``reruns``, ``mismatches`` and ``cost`` (wei); None if
    nothing was checked."""


@dataclass(frozen=True)
class FaultRecord:
    """A provider outvoted by verification on one task of one graph, and its ``reportFault`` transaction."""

    session_id: str
    graph_id: str | None
    provider: str
    task: str
    evidence: str
    tx_hash: str | None
    created_at: float
    updated_at: float
