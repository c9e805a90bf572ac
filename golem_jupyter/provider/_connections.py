"""How many negotiation connections the agent holds at once, and which it lets go.

Anyone can open a TCP connection to a provider's negotiation port and send nothing. Each one
costs the agent a descriptor until its request arrives or times out, and an agent out of
descriptors cannot read a meter file, start a worker or answer its own requestors. So the agent
holds at most ``total`` connections, and at most ``per_address`` from one IP address.

When a new connection would pass a limit, the agent does not refuse it: it lets go of a
connection that is still *waiting* for its request line. Honest requestors send their one line
as soon as they connect, so they spend microseconds waiting; an idle flood spends all its time
there. Which one goes: past ``per_address``, the oldest waiting connection of that address;
past ``total``, the oldest waiting connection of the address holding the most waiting ones. A
requestor talking from an address of its own is therefore never the one let go while any
address holds more connections than it does. Connections past the waiting stage (a request
being handled) are never let go; if all ``total`` are such, the new one is closed at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio


@dataclass(eq=False)
class Connection:
    """One held connection: where from, and the scope its wait for a request runs in."""

    address: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    waiting: bool = False
    held: bool = True

    @contextmanager
    def waiting_for_request(self) -> Iterator[None]:
        """The block in which this connection may be let go (its scope cancelled)."""
        self.waiting = True
        try:
            with self.scope:
                yield
        finally:
            self.waiting = False


class ConnectionLimits:
    """The connections one agent holds, by address, and the rule for letting them go."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._held: dict[str, list[Connection]] = {}  # oldest first
        self.open = 0
        self.let_go = 0
        """Connections let go so far."""

    @contextmanager
    def hold(self, address: str) -> Iterator[Connection | None]:
        """Hold a connection from ``address`` for the block: a :class:`Connection`, or None when
        every connection held is busy with a request (then close this one at once)."""
        if len(self._held.get(address, ())) >= self.per_address:
            self._let_go_oldest_waiting(address)
        if self.open >= self.total:
            self._let_go_oldest_waiting(self._busiest())
        if self.open >= self.total or len(self._held.get(address, ())) >= self.per_address:
            yield None
            return
        connection = Connection(address)
        self._held.setdefault(address, []).append(connection)
        self.open += 1
        try:
            yield connection
        finally:
            self._forget(connection)

    def _busiest(self) -> str | None:
        """The address holding the most connections that wait for their request."""
        counts = {a: sum(c.waiting for c in held) for a, held in self._held.items()}
        return max((a for a in counts if counts[a]), key=counts.__getitem__, default=None)

    def _let_go_oldest_waiting(self, address: str | None) -> None:
        waiting = next((c for c in self._held.get(address, ()) if c.waiting), None)
        if waiting is None:
            return
        waiting.scope.cancel()
        # Out of the counts now; its task closes the socket within one pass of the event loop.
        self._forget(waiting)
        self.let_go += 1

    def _forget(self, connection: Connection) -> None:
        if not connection.held:
            return
        connection.held = False
        held = self._held[connection.address]
        held.remove(connection)
        if not held:
            del self._held[connection.address]
        self.open -= 1
