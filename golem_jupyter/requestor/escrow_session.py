"""One escrow session: the deposit a :class:`~.cluster.GolemCluster` works against."""

from __future__ import annotations

import logging
import time

from ..chain import Chain
from ..chain.types import NATIVE
from ..errors import GolemError, InvalidInput
from ..ledger import Ledger

logger = logging.getLogger(__name__)


class EscrowSession:
    """A deposit in the escrow, recorded in the ledger before and after it is made on-chain.

    ``deposit`` is what the escrow holds; ``budget`` is what the session may spend, at most the
    deposit (it may be set lower, and raising it above the deposit tops the deposit up).
    """

    def __init__(
        self,
        chain: Chain,
        ledger: Ledger,
        *,
        session_id: bytes,
        budget: int,
        seconds: int,
        label: str | None,
        run_id: str | None,
    ) -> None:
        self.chain = chain
        self.ledger = ledger
        self.session_id = session_id
        self.budget = budget
        self.deposit = budget
        self.seconds = seconds
        self.label = label
        self.run_id = run_id
        self.deadline = 0
        self.tx_hash: str | None = None

    def open(self) -> None:
        """Deposit the budget (a transaction); the ledger row says 'failed' if the chain refuses."""
        network = self.chain.network
        self.deadline = int(time.time()) + self.seconds
        self.ledger.record_session(
            session_id=self.session_id,
            network=network.name,
            chain_id=network.chain_id,
            escrow=network.escrow,
            requestor=self.chain.wallet.address,
            token=NATIVE,
            budget=self.budget,
            deadline=self.deadline,
            label=self.label,
            run_id=self.run_id,
        )
        try:
            receipt = self.chain.escrow.open_session(self.session_id, self.budget, self.deadline)
        except GolemError as error:
            self.ledger.update_session(self.session_id, status="failed")
            raise GolemError(f"Could not open the escrow session: {error}") from error
        self.tx_hash = receipt.tx_hash
        self.ledger.update_session(self.session_id, status="open", tx_hash=receipt.tx_hash)

    def raise_budget(self, amount: int) -> str | None:
        """Let the session spend ``amount`` in total; above the deposit, top it up (returns the tx hash)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise InvalidInput(f"A budget must be a positive amount of wei, got {amount!r}.")
        tx_hash = None
        if amount > self.deposit:
            tx_hash = self.chain.escrow.top_up(self.session_id, amount - self.deposit).tx_hash
            self.deposit = amount
            self.ledger.update_session(self.session_id, budget=amount)
        self.budget = amount
        return tx_hash
