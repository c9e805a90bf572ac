"""``golem demo``: one session's money flow on a fresh embedded chain, printed step by step.

Providers publish offers, a requestor opens a session, a graph is settled, a provider claims
with a voucher, both withdraw, and after the claim window the requestor gets the rest back.
Everything goes over JSON-RPC to a real (embedded) chain; nothing is simulated.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .chain import Chain, Offer, Wallet
from .chain.types import new_id
from .devnet import Devnet

ETH = 10**18


def run_demo(out=print) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Devnet(port=0, claim_window=3600, connection_file=Path(tmp) / "devnet.json") as network,
    ):
        out(f"Embedded chain {network.chain_id} at {network.rpc_url}")
        out(f"  GolemEscrow       {network.escrow}")
        out(f"  ProviderRegistry  {network.registry}")
        requestor = Chain.connect(network, Wallet.dev(0))
        providers = [Chain.connect(network, Wallet.dev(i)) for i in (1, 2)]

        for port, (chain, price) in enumerate(zip(providers, (2 * 10**12, 3 * 10**12), strict=True), start=7001):
            chain.registry.publish(Offer(f"127.0.0.1:{port}", price_per_cpu_second=price, cpus=4, memory_bytes=8 << 30))
        out("\nOffers on the market:")
        for offer in requestor.registry.active_offers():
            out(f"  {offer.provider}  {offer.endpoint}  {offer.price_per_cpu_second} wei/CPU-s  {offer.cpus} CPUs")

        session = new_id()
        deadline = requestor.w3.eth.get_block("latest").timestamp + 3600
        opened = requestor.escrow.open_session(session, ETH, deadline)
        out(f"\nOpened session 0x{session.hex()[:16]}… with 1 ETH  tx {opened.tx_hash}")

        p1, p2 = (p.wallet.address for p in providers)
        payouts = {p1: 120 * 2 * 10**12, p2: 80 * 3 * 10**12}  # 120 and 80 CPU-seconds at their prices
        settled = requestor.escrow.settle_graph(session, new_id(), payouts, new_id())
        out(f"Settled a graph: {payouts[p1]} wei to provider 1, {payouts[p2]} wei to provider 2")
        out(f"  tx {settled.tx_hash}  gas {settled.gas_used}")

        # The requestor's voucher promises provider 2 more than was settled (a graph still running).
        voucher = requestor.escrow.sign_voucher(session, p2, payouts[p2] + 50 * 3 * 10**12)
        claimed = providers[1].escrow.claim(voucher)
        out(f"Provider 2 claimed with a voucher for {voucher.cumulative_amount} wei  tx {claimed.tx_hash}")

        for i, chain in enumerate(providers, start=1):
            credited = chain.escrow.balance_of(chain.wallet.address)
            withdrawn = chain.escrow.withdraw()
            out(f"Provider {i} withdrew {credited} wei  tx {withdrawn.tx_hash}")

        state = requestor.escrow.session(session)
        out(f"\nSession: deposited {state.deposited}, paid out {state.paid_out}, remaining {state.remaining}")
        # Move the chain's clock past deadline + claim window, then anyone may close.
        requestor.w3.manager.request_blocking("evm_increaseTime", [hex(3600 + requestor.escrow.claim_window + 1)])
        closed = requestor.escrow.close_session(session)
        refund = requestor.escrow.events("SessionClosed", from_block=closed.block_number, sessionId=session)[0]
        out(f"Closed after the claim window: {refund['refund']} wei refunded to the requestor  tx {closed.tx_hash}")
        out(f"\nDone in {time.process_time():.1f} s of CPU; the chain stops now.")
