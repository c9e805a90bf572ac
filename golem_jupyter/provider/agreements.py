"""One agreement between a provider and a requestor's session, and the provider's payment rules.

The provider trusts its own meter and the chain, not the requestor. It serves only against an
allocation of the session's deposit that it has seen on-chain and that covers the exposure it
asked for; it counts as paid only what that allocation backs: ``min(last voucher, allocation)``
(escrow version 2 pays a voucher from the provider's allocation and nothing else). Two rules
decide whether it keeps serving:

* **Exposure**: work done but not yet paid (``owed - paid``, paid being what the allocation
  backs) must stay within
  ``max_unpaid``; in-flight graphs are unpaid until they finish, so this is the hard cap. In a
  sandbox the worker's meter runs in the same process as the requestor's tasks, which can
  silence or forge it; the kernel's count of the sandbox's CPU time (``used``) cannot be, and
  the cap applies to it too.
* **Underpayment**: once the worker has been idle for ``grace`` seconds (every graph it worked
  on is finished, so the requestor has had time to send its voucher and top the allocation up),
  what is paid must cover what the meter says within ``tolerance`` (relative) plus ``slack``
  (absolute, for rounding).

The same tolerance decides whether the provider signs a release at the end (:meth:`PaymentPolicy.releases`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chain.vouchers import Release, Voucher
from ..market.agreements import AgreementStatus
from ..market.pricing import Tariff


@dataclass(frozen=True)
class PaymentPolicy:
    tolerance: float = 0.02
    slack: int = 1_000
    max_unpaid: int = 10**16
    grace: float = 10.0
    """Seconds an idle, underpaid agreement is served before the provider stops: a requestor that
    verifies results pays a graph only once its checks pass (DESIGN.md section 6), seconds after
    the provider's last task of it."""

    def verdict(
        self, owed: int, paid: int, meter: dict[str, Any], now: float | None = None, *, used: int = 0
    ) -> str | None:
        """``None`` while serving is fine; otherwise the reason code to stop (UNDERPAID, EXPOSURE_LIMIT).

        ``used`` is what the kernel counted for the sandbox at the agreement's prices: its exposure
        counts too, so a task that silences or forges the worker's meter still meets the limit."""
        unpaid = owed - paid
        if max(owed, used) - paid > self.max_unpaid:
            return "EXPOSURE_LIMIT"
        now = time.time() if now is None else now
        idle = meter.get("executing", 0) <= 0 and now - float(meter.get("last_change", 0)) >= self.grace
        if idle and unpaid > owed * self.tolerance + self.slack:
            return "UNDERPAID"
        return None

    def releases(self, owed: int, final_amount: int, allocated: int) -> bool:
        """Whether to sign a release for ``final_amount`` in total: it covers what the meter says is
        ``owed`` within the tolerance, or it is all the allocation (``allocated``) could ever pay."""
        return owed - final_amount <= owed * self.tolerance + self.slack or final_amount >= allocated


@dataclass
class Agreement:
    """What was agreed, the worker serving it, and the best voucher received."""

    agreement_id: bytes
    session_id: bytes
    requestor: str
    tariff: Tariff
    gpus: int
    scheduler_address: str
    ca_certificate: str
    directory: Path
    key_pem: str = field(repr=False, default="")
    state: AgreementStatus = AgreementStatus.NEGOTIATING
    """NEGOTIATING until the requestor confirms, ACTIVE while the worker serves, then TERMINATED."""
    voucher: Voucher | None = None
    end_reason: str = ""
    created: float = field(default_factory=time.time)
    exposure: int = 0
    """The allocation this provider asked for (in its accept) before it serves."""
    allocated: int = 0
    """Its allocation in the session, as last read from the chain."""
    allocation_seen: bool = False
    """The requestor said it allocated and the chain showed an allocation covering ``exposure``."""
    allocation_read: float = 0.0
    """When (monotonic) ``allocated`` was last read from the chain."""
    release: Release | None = None
    """The release this provider signed at the end, if it did."""

    @property
    def meter_file(self) -> Path:
        return self.directory / "meter.json"

    @property
    def paid(self) -> int:
        """The cumulative amount the best voucher promises."""
        return self.voucher.cumulative_amount if self.voucher else 0

    @property
    def backed(self) -> int:
        """What counts as paid: the voucher, as far as the on-chain allocation backs it."""
        return min(self.paid, self.allocated)

    def owed(self, meter: dict[str, Any]) -> int:
        """What the meter says this session owes, start fee included."""
        return self.tariff.bill(meter.get("cpu_seconds", 0.0), meter.get("gpu_seconds", 0.0), first=True)

    def used(self, meter: dict[str, Any]) -> int:
        """The sandbox's CPU time as the kernel counted it (the worker's own overhead included), at
        the agreement's CPU price: an upper bound of the CPU work done that no task can lower.
        Zero for an unsandboxed worker, which has no such count."""
        return self.tariff.bill(meter.get("sandbox_cpu_seconds", 0.0), 0.0, first=True)

    def owed_at_end(self, meter: dict[str, Any]) -> int:
        """What the session owes in the end: nothing if nothing ran (the start fee comes with the first work)."""
        ran = meter.get("cpu_seconds", 0.0) > 0 or meter.get("gpu_seconds", 0.0) > 0 or meter.get("tasks", 0) > 0
        return self.owed(meter) if ran else 0

    def accept_voucher(self, voucher: Voucher) -> bool:
        """Keep ``voucher`` if it promises more than the one held; older ones change nothing."""
        if self.voucher is not None and voucher.cumulative_amount <= self.voucher.cumulative_amount:
            return False
        self.voucher = voucher
        (self.directory / "voucher.json").write_text(json.dumps(voucher.to_json(), indent=2))
        return True
