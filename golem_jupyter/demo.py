"""``golem demo``: the whole market on this machine, with every receipt printed.

It starts the embedded chain and two provider agents (separate processes, each with its own
key and price), rents both with a :class:`GolemCluster`, runs two graphs (a Monte Carlo
estimate of pi fanned out over the providers, and a dask.array reduction), waits until each
graph is settled on-chain, prints the receipts from the ledger, then closes the session after
its claim window so the unspent deposit is refunded. Nothing is simulated; everything it
starts is stopped.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

ETH = 10**18
SESSION_SECONDS = 3600


def throw_darts(seed: int, n: int = 20_000) -> int:
    """How many of ``n`` random points in the unit square fall inside the quarter circle."""
    rng = random.Random(seed)
    return sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(n))


def run_demo(out=print) -> None:
    import dask.array as da
    from distributed import Client

    from .chain import Chain, Wallet
    from .devnet import Devnet
    from .ledger import Ledger
    from .requestor.cluster import GolemCluster

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        previous = os.environ.get("GOLEM_HOME")
        os.environ["GOLEM_HOME"] = str(home)  # the demo's market and ledger are its own
        try:
            with Devnet(port=0, providers=2, claim_window=3600, connection_file=home / "devnet.json") as network:
                out(f"Embedded chain {network.chain_id} at {network.rpc_url}")
                chain = Chain.connect(network, Wallet.dev(0))
                out("Offers on the market:")
                for offer in chain.registry.active_offers():
                    out(f"  {offer.provider} at {offer.endpoint}: {offer.price_per_cpu_second} wei per CPU-second")
                ledger = Ledger(home / "ledger.sqlite")
                cluster = GolemCluster(
                    n_providers=2,
                    budget=ETH // 10,
                    network=network,
                    ledger=ledger,
                    session_seconds=SESSION_SECONDS,
                    quiet=True,
                )
                with cluster, Client(cluster) as client:
                    out(f"\nRented {len(cluster.rentals)} providers; session 0x{cluster.session_id.hex()}")
                    hits = client.gather(client.map(throw_darts, range(64)))
                    out(f"pi is about {4 * sum(hits) / (64 * 20_000):.4f} (64 tasks)")
                    x = da.random.RandomState(0).random_sample(2_000_000, chunks=100_000)
                    out(f"mean of 2,000,000 uniform samples: {float(x.mean().compute()):.4f} (dask.array)")
                    cluster.wait_for_settlement(120)
                    session_id = cluster.session_id
                _print_receipts(ledger, session_id, out)
                # Move the chain's clock past the deadline and claim window; then anyone may close.
                chain.w3.manager.request_blocking("evm_increaseTime", [hex(SESSION_SECONDS + 3600 + 1)])
                closed = chain.escrow.close_session(session_id)
                refund = chain.escrow.events("SessionClosed", from_block=closed.block_number, sessionId=session_id)
                out(f"\nClosed after the claim window: {refund[0]['refund']} wei refunded  tx {closed.tx_hash}")
        finally:
            if previous is None:
                os.environ.pop("GOLEM_HOME", None)
            else:
                os.environ["GOLEM_HOME"] = previous
    out(f"Done in {time.perf_counter() - started:.1f} s; the market is stopped.")


def _print_receipts(ledger, session_id: bytes, out) -> None:
    session = ledger.session(session_id)
    out(f"\nReceipts (budget {session.budget} wei, spent {session.spent} wei):")
    for graph in reversed(ledger.graphs(session_id=session_id)):
        out(f"Settled a graph {graph.graph_id[:18]}…: {graph.n_tasks} tasks, {graph.total} wei, {graph.status}")
        out(f"  tx {graph.tx_hash}")
        for payout in graph.payouts:
            out(f"  {payout.provider}  {payout.cpu_seconds:8.3f} CPU-s  {payout.amount:>14} wei")
