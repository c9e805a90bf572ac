"""The JSON documents of the REST API, built from ledger records and chain objects.

Pure functions, no I/O, so that the shape the side panel reads is easy to test on its own.
Amounts are decimal strings of wei under keys ending in ``_wei``: a JavaScript number holds
integers exactly only up to 2^53, and one ETH is 10^18 wei.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..chain.network import Network
from ..chain.registry import Offer
from ..devnet import DevnetProvider
from ..ledger import FaultRecord, GraphRecord, Payout, SessionRecord
from ..market.matching import Reputation, offer_sandbox
from ..requestor.closing import Closing
from ..requestor.sessions import SessionSummary


def wei(amount: int | None) -> str | None:
    return None if amount is None else str(amount)


def network_view(network: Network) -> dict[str, Any]:
    # Only what a client needs to find the market: the dev accounts' keys stay out.
    return {
        "name": network.name,
        "rpc_url": network.rpc_url,
        "chain_id": network.chain_id,
        "escrow": network.escrow,
        "registry": network.registry,
    }


def wallet_view(address: str, balance: int, credited: int) -> dict[str, Any]:
    return {"address": address, "balance_wei": wei(balance), "credited_wei": wei(credited)}


def escrow_view(locked: int, open_sessions: int) -> dict[str, Any]:
    return {"locked_wei": wei(locked), "open_sessions": open_sessions}


def offer_view(offer: Offer, reputation: Reputation | None, reachable: bool) -> dict[str, Any]:
    """One offer of the registry; ``reputation`` is None for a provider the escrow has no events of.

    ``reputation`` in the view is its :attr:`~..market.matching.Reputation.score` (None: new on
    the market); ``faults`` counts the ``FaultReported`` events against the provider (0 for a
    newcomer). ``sandbox`` is what the offer states it runs requestors' code in, one of
    :data:`~..market.matching.SANDBOX_TIERS` ("none" when it states nothing readable).
    """
    return {
        "provider": offer.provider,
        "endpoint": offer.endpoint,
        "price_per_cpu_second_wei": wei(offer.price_per_cpu_second),
        "price_per_gpu_second_wei": wei(offer.price_per_gpu_second),
        "start_fee_wei": wei(offer.start_fee),
        "cpus": offer.cpus,
        "gpus": offer.gpus,
        "gpu_model": offer.gpu_model,
        "memory_bytes": offer.memory_bytes,
        "reputation": None if reputation is None else reputation.score,
        "faults": 0 if reputation is None else reputation.faults,
        "sandbox": offer_sandbox(offer),
        "reachable": reachable,
    }


def devnet_view(
    network: Network | None, providers: Iterable[DevnetProvider] = (), started_here: bool = False
) -> dict[str, Any]:
    """The local market: ``network`` is the running devnet, None when none runs."""
    if network is None:
        return {
            "running": False,
            "rpc_url": None,
            "chain_id": None,
            "pid": None,
            "providers": [],
            "started_here": False,
        }
    return {
        "running": True,
        "rpc_url": network.rpc_url,
        "chain_id": network.chain_id,
        "pid": network.pid,
        "providers": [
            {
                "address": p.address,
                "endpoint": p.endpoint,
                "pid": p.pid,
                "price_per_cpu_second_wei": wei(p.price_per_cpu_second),
                "gpus": p.gpus,
                "liar": p.liar,  # DEVNET ONLY: golem devnet --liars
            }
            for p in providers
        ],
        "started_here": started_here,
    }


def job_view(graph: GraphRecord, session: SessionRecord | None) -> dict[str, Any]:
    """A graph execution as the job list shows it. ``session`` is None only if the ledger lost it."""
    return {
        "graph_id": graph.graph_id,
        "session_id": graph.session_id,
        "label": graph.label,
        "notebook": session.label if session else None,
        "run_id": session.run_id if session else None,
        "n_tasks": graph.n_tasks,
        "amount_wei": wei(graph.total),
        "status": graph.status,
        "tx_hash": graph.tx_hash,
        "providers": [p.provider for p in graph.payouts],
        "created_at": graph.created_at,
        "updated_at": graph.updated_at,
    }


def payout_view(payout: Payout) -> dict[str, Any]:
    return {
        "provider": payout.provider,
        "cpu_seconds": payout.cpu_seconds,
        "gpu_seconds": payout.gpu_seconds,
        "amount_wei": wei(payout.amount),
        "cumulative_wei": wei(payout.cumulative),
    }


def session_view(session: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "label": session.label,
        "status": session.status,
        "budget_wei": wei(session.budget),
        "spent_wei": wei(session.spent),
        "settled_wei": wei(session.settled),
        "network": session.network,
        "chain_id": session.chain_id,
        "escrow": session.escrow,
        "requestor": session.requestor,
        "tx_hash": session.tx_hash,
        "deadline": session.deadline,
        "run_id": session.run_id,
    }


def escrow_session_view(summary: SessionSummary, now: int) -> dict[str, Any]:
    """One of the wallet's sessions as ``golem sessions`` lists it: the escrow's numbers now."""
    return {
        "session_id": summary.session_id,
        "label": summary.record.label,
        "status": "closed" if summary.closed else summary.record.status,
        "created_at": summary.record.created_at,
        "deposited_wei": wei(summary.deposited),
        "paid_wei": wei(summary.paid),
        "allocated_wei": wei(summary.allocated),
        "refundable_now_wei": wei(summary.refundable_now),
        "returned_wei": wei(summary.returned),
        "open_allocations": summary.open_allocations,
        "closed": summary.closed,
        "closable_at": summary.closable_at,
        "closable": summary.closable(now),
    }


def closing_view(closing: Closing) -> dict[str, Any]:
    """What a Close did, and the sentence the panel shows."""
    return {
        "session_id": "0x" + closing.session_id.hex(),
        "closed": closing.closed,
        "returned_wei": wei(closing.returned),
        "tx_hash": closing.tx_hash,
        "holdouts": [
            {"provider": h.provider, "locked_wei": wei(h.locked), "reason": h.reason} for h in closing.holdouts
        ],
        "closable_at": closing.closable_at,
        "message": closing.describe(),
    }


def verification_view(graph: GraphRecord, faults: list[FaultRecord]) -> dict[str, Any] | None:
    """What ``--verify`` did in a graph, and the providers reported in it; None if nothing was checked."""
    counts = graph.verification or {}
    if not counts and not faults:
        return None
    return {
        "checked": counts.get("checked", 0),
        "reruns": counts.get("reruns", 0),
        "mismatches": counts.get("mismatches", 0),
        "cost_wei": wei(counts.get("cost", 0)),
        "reported": [{"provider": f.provider, "task": f.task, "tx_hash": f.tx_hash} for f in faults],
    }


def job_detail_view(
    graph: GraphRecord, session: SessionRecord | None, faults: list[FaultRecord] | None = None
) -> dict[str, Any]:
    """One job in full: the list's fields, its payouts, its settlement, its checks and its session."""
    return {
        **job_view(graph, session),
        "verification": verification_view(graph, faults or []),
        "payouts": [payout_view(p) for p in graph.payouts],
        "block_number": graph.block_number,
        "gas_used": graph.gas_used,
        "error": graph.error,
        "attempts": graph.attempts,
        "session": session_view(session) if session else None,
    }


def jobs_page_view(jobs: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"total": total, "limit": limit, "offset": offset, "jobs": jobs}
