"""What the chain says now: the network, the requestor's wallet and escrow, the offers on the market.

The functions that talk JSON-RPC block; the handlers run them in a thread. Probing the offers'
endpoints is asyncio, so that every offer is tried at once on the server's loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import requests
from eth_utils import to_checksum_address
from web3.exceptions import Web3Exception

from ..chain import Chain
from ..chain.network import NETWORK_ENV, Network, connect, resolve
from ..chain.registry import Offer
from ..chain.wallet import KEY_ENV, Wallet, default_wallet
from ..devnet import running_devnet
from ..errors import ChainMismatch, ConfigurationError, GolemError, NetworkUnreachable
from ..market.matching import Reputation, offers_with_reputations
from ..requestor.closing import close_recorded
from ..requestor.negotiation import Negotiator
from ..requestor.sessions import wallet_sessions
from . import records, views

PROBE_TIMEOUT = 1.0
"""Seconds an offer's endpoint has to accept a TCP connection before it counts as unreachable."""
UNAVAILABLE = (ConfigurationError, NetworkUnreachable, ChainMismatch)
"""Errors that mean there is no market to talk to (as opposed to a bug)."""
RPC_FAILURES = (requests.exceptions.RequestException, Web3Exception)
"""What web3 raises when a node dies half-way or a URL answers with something other than JSON-RPC."""


def network_for(spec: str | None) -> Network:
    """The network named by ``spec``, else ``$GOLEM_NETWORK``, else the running devnet."""
    try:
        if spec is None and not os.environ.get(NETWORK_ENV) and running_devnet() is None:
            # resolve() would name a missing file; the person at the side panel needs what to do instead.
            raise ConfigurationError(
                "No network is configured and no local market is running. Start one from the Golem side panel or "
                f"with `golem devnet --providers 2`, or set {NETWORK_ENV} to a JSON-RPC URL or connection file."
            )
        return resolve(spec)
    except RPC_FAILURES as error:  # a URL whose server is not a JSON-RPC node
        raise NetworkUnreachable(
            f"{spec} did not answer as a JSON-RPC node should ({type(error).__name__}); check the URL."
        ) from None
    except OSError as error:  # a connection file that is a directory, unreadable, ...
        raise ConfigurationError(
            f"Cannot read the connection file {error.filename} ({error.strerror}); remove or replace it."
        ) from None


def connected(network: Network) -> Chain:
    """A checked connection (no wallet: only views are called)."""
    try:
        return Chain(connect(network), network)
    except RPC_FAILURES as error:
        raise _stopped(network, error) from None


def requestor_address(network: Network) -> str:
    """The address of the wallet kernels use when given none (as GolemCluster picks it)."""
    if os.environ.get(KEY_ENV):
        return Wallet.from_env().address
    if network.accounts:
        return network.accounts[0].address
    raise ConfigurationError(
        f"No requestor wallet: set {KEY_ENV} in the environment Jupyter was started from (kernels use it too); "
        "only a devnet comes with a funded account."
    )


def read_status(spec: str | None) -> dict[str, Any]:
    """The status document less its devnet part. An absent or unreachable chain is a status, not an error."""
    status: dict[str, Any] = {
        "network": None,
        "reachable": False,
        "error": None,
        "wallet": None,
        "escrow": views.escrow_view(0, 0),
    }
    try:
        network = network_for(spec)
        status["network"] = views.network_view(network)
        chain = connected(network)
    except UNAVAILABLE as error:
        return status | {"error": str(error)}
    status["reachable"] = True
    try:
        address = requestor_address(network)
        balance = chain.w3.eth.get_balance(address)
        credited = chain.escrow.balance_of(address)
        locked, count = _locked(chain, address)
    except ConfigurationError as error:
        return status | {"error": str(error)}
    except (NetworkUnreachable, *RPC_FAILURES) as error:
        return status | {"reachable": False, "error": str(_stopped(network, error))}
    return status | {
        "wallet": views.wallet_view(address, balance, credited),
        "escrow": views.escrow_view(locked, count),
    }


def _locked(chain: Chain, address: str) -> tuple[int, int]:
    """What the escrow still holds in this wallet's sessions the ledger has as open, and how many there are."""
    locked = count = 0
    for session in records.open_sessions(address, chain.network.chain_id, chain.network.escrow):
        state = chain.escrow.session(session.session_id)
        if state.exists and not state.closed:  # the ledger may lag behind a close done elsewhere
            locked += state.remaining
            count += 1
    return locked, count


def read_sessions(spec: str | None, include_closed: bool) -> dict[str, Any]:
    """The wallet's escrow sessions the ledger recorded on this network, with the chain's numbers now."""
    network = network_for(spec)
    chain = connected(network)
    address = requestor_address(network)
    try:
        with records.open_ledger() as ledger:
            summaries = [] if ledger is None else wallet_sessions(ledger, chain, address, include_closed=include_closed)
        now = chain.w3.eth.get_block("latest")["timestamp"]
    except RPC_FAILURES as error:
        raise _stopped(network, error) from None
    return {
        "network": network.name,
        "wallet": address,
        "sessions": [views.escrow_session_view(s, now) for s in summaries],
    }


async def close_session(spec: str | None, session_id: str) -> dict[str, Any]:
    """Close one of the wallet's recorded sessions (releases, then the cooperative close or a reclaim)."""
    network = await asyncio.to_thread(network_for, spec)
    chain = await asyncio.to_thread(connected, network)
    wallet = default_wallet(network)
    chain = Chain(chain.w3, network, wallet)
    with records.open_ledger() as ledger:
        if ledger is None or await asyncio.to_thread(ledger.session, session_id) is None:
            raise SessionUnknown(f"The ledger {records.ledger_path()} has no session {session_id}.")
        negotiator = Negotiator(wallet.account, network.chain_id)
        try:
            closing = await close_recorded(chain, ledger, negotiator, bytes.fromhex(session_id[2:]))
        except RPC_FAILURES as error:
            raise _stopped(network, error) from None
    return {"closing": views.closing_view(closing)}


class SessionUnknown(GolemError):
    """The session to close is not in the ledger (so its providers and vouchers are unknown)."""


def read_offers(spec: str | None) -> tuple[Network, list[Offer], dict[str, Reputation]]:
    """The network, its active offers (in ranking order: providers without a reported fault first,
    cheapest first), and the :class:`~..market.matching.Reputation` of each provider the escrow has
    events of (``Paid``, ``Claimed``, ``Released``, ``FaultReported``)."""
    network = network_for(spec)
    chain = connected(network)
    try:
        ranked = offers_with_reputations(chain)
    except RPC_FAILURES as error:
        raise _stopped(network, error) from None
    known = {to_checksum_address(r.offer.provider): r.reputation for r in ranked if r.reputation is not None}
    return network, [r.offer for r in ranked], known


def _stopped(network: Network, error: Exception) -> NetworkUnreachable:
    if isinstance(error, NetworkUnreachable):
        return error
    return NetworkUnreachable(
        f"The chain at {network.rpc_url} did not answer as a JSON-RPC node should ({type(error).__name__}); "
        "check that the node runs, or restart the local market."
    )


def reputation_of(offer: Offer, reputations: dict[str, Reputation]) -> Reputation | None:
    """What the escrow's events say about ``offer``'s provider; None for one it has no events of."""
    return reputations.get(to_checksum_address(offer.provider)) if offer.provider else None


async def reachable(endpoints: list[str], timeout: float = PROBE_TIMEOUT) -> list[bool]:
    """For each endpoint, whether it accepts a TCP connection within ``timeout`` seconds; all tried at once."""
    return list(await asyncio.gather(*(_accepts(endpoint, timeout) for endpoint in endpoints)))


async def _accepts(endpoint: str, timeout: float) -> bool:
    address = split_endpoint(endpoint)
    if address is None:
        return False
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    except OSError:  # refused, unroutable, or TimeoutError (an OSError too)
        return False
    writer.close()  # the provider sees a connection that sends nothing, and drops it
    return True


def split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``host:port`` or ``[v6]:port`` (a scheme is ignored); None if it is neither."""
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)
