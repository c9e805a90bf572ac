"""The requestor's side of the negotiation protocol: one signed request, one signed answer.

Each request opens a TCP connection to the provider's endpoint, sends one line and reads one
line back. The answer must be signed by the provider the offer belongs to and addressed to us;
a ``reject`` becomes a :class:`~golem_jupyter.market.messages.Rejection` carrying the
provider's reason code and sentence.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..chain import _imports  # noqa: F401 (first: the eth libraries, keeping the recursion limit)
from ..errors import GolemError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

from ..market.messages import (
    MAX_MESSAGE_BYTES,
    TO_REQUESTOR,
    Message,
    Rejection,
    ReplayGuard,
    decode_line,
    encode,
    sign_message,
    verify_message,
)

REQUEST_TIMEOUT = 10.0


class ProviderUnreachable(GolemError):
    """A provider's endpoint did not answer (refused, timed out, or closed early)."""


class Negotiator:
    """Sends signed requests from one account to providers and checks their answers."""

    def __init__(self, account: LocalAccount, chain_id: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.account = account
        self.chain_id = chain_id
        self.timeout = timeout
        self.replay = ReplayGuard()

    async def request(self, endpoint: str, provider: str, kind: str, body: dict[str, Any]) -> Message:
        """Send ``kind`` to ``provider`` at ``endpoint``; return its verified answer."""
        wire = sign_message(self.account, chain_id=self.chain_id, kind=kind, recipient=provider, body=body)
        host, _, port = endpoint.rpartition(":")
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(host, int(port), limit=MAX_MESSAGE_BYTES + 2)
                try:
                    writer.write(encode(wire))
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as error:
            raise ProviderUnreachable(
                f"Provider {provider} at {endpoint} did not answer ({type(error).__name__}: {error})."
            ) from None
        if not line:
            raise ProviderUnreachable(f"Provider {provider} at {endpoint} closed the connection without answering.")
        answer = verify_message(
            decode_line(line.rstrip(b"\n")),
            chain_id=self.chain_id,
            recipient=self.account.address,
            kinds=TO_REQUESTOR,
            replay=self.replay,
            sender=provider,
        )
        if answer.kind == "reject":
            raise Rejection.from_body(answer.body)
        return answer
