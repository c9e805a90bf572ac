"""The scheduler serves each peer by the role its certificate names (DESIGN.md section 6).

A provider controls its worker completely, and the session's CA gave that worker a genuine
certificate. Mutual TLS therefore only says *who* is speaking; this module decides *what* they
may ask. The requestor's own client (and the scheduler) get every handler. A worker, or any
peer whose certificate names no role we know, gets the worker protocol and nothing else:

* on a plain connection, only the handlers in :data:`WORKER_HANDLERS` (registration,
  heartbeats, the scheduler's answers a worker needs to fetch data from its peers, leaving);
  each of those that names a worker may only name the peer's own;
* on its batched stream, only the messages in :data:`WORKER_STREAM` (task reports, data it
  holds or dropped, log events and keep-alives), never one that says which worker it came from
  (the scheduler adds that itself), nor a report of a task another worker is running;
* it registers only under the name its certificate states (the provider's address), so no
  provider can speak for another.

Everything else (``run_function``, plugins, ``update_graph``, scatter, cluster dumps, the
meter's ``golem_*`` controls, and whatever distributed adds later) is refused with a log line
naming the provider: an allowlist, not a denylist. It works by wrapping the comm each peer
connects with, so it sees every message before distributed dispatches it, on the plain
connection and on the stream alike.

One thing happens before any handler or check can look at a message: distributed unpickles the
``ToPickle`` parts of a message while it reads it (the client sends its graphs that way), and a
pickle runs whatever it names. :func:`unpickle_only_from_the_client` therefore lets the
scheduler process unpickle only what a peer with the client's (or the scheduler's) certificate
sent; a pickle in anything a worker sends, a request or an answer to the scheduler's own
``get_data``, is refused and that connection dropped.

This runs in the scheduler process (see :mod:`golem_jupyter.scheduler`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from distributed.comm.core import Comm, CommClosedError
from distributed.core import _expects_comm, error_message

from ..errors import GolemError
from ..market.certificates import Role, peer_identity
from ._errors import UnsafePayload
from ._hooks import _swap_everywhere

logger = logging.getLogger("golem_jupyter.trust.authorization")

WORKER_HANDLERS = frozenset(
    {
        "register-worker",  # joining: only under the name the certificate states
        "heartbeat_worker",
        "unregister",
        "retire_workers",  # a worker closing gracefully retires itself
        "set_resources",
        "who_has",  # where the data a task needs lives
        "golem_committed_data",  # an input a peer handed over otherwise than committed (_transfers.py)
        "identity",
        "close",
    }
)
"""What a worker may ask the scheduler on a plain connection; everything else is refused."""

WORKER_STREAM = frozenset(
    {
        "task-finished",
        "task-erred",
        "release-worker-data",
        "add-keys",
        "long-running",
        "reschedule",
        "keep-alive",
        "log-event",
        "worker-status-change",
        "request-refresh-who-has",
        "close-stream",
    }
)
"""What a worker may send on its batched stream; anything else is dropped."""

PEER_HANDLERS = frozenset({"get_data", "identity", "close"})
"""What one worker may ask another worker: the data a task of its needs, and nothing else."""

_REFUSED = "golem-refused"
"""The handler a refused request is routed to: it answers with a PermissionError."""


class PeerRefused(GolemError, PermissionError):
    """The scheduler refused a request because of the role the peer's certificate names."""


_READING_A_PROVIDER: ContextVar[bool] = ContextVar("golem_reading_a_provider", default=False)
"""True while a comm reads what a peer other than the requestor's client sent (in the task that
reads, and in the thread distributed may hand the decoding to)."""

TRUSTED_ROLES = (Role.CLIENT, Role.SCHEDULER)
"""Roles whose peers are the requestor's own side: served everything, their pickles read."""


def authorize_by_role(scheduler: Any) -> None:
    """Serve every connection to ``scheduler`` by its peer's role. Call before it starts listening."""
    serve = scheduler.handle_comm
    scheduler.handlers[_REFUSED] = _answer_refused

    def handle_comm(comm: Comm) -> Any:
        role, name = peer_identity(comm.extra_info.get("peercert"))
        if role in TRUSTED_ROLES:
            return serve(comm)
        return serve(_WorkerComm(comm, scheduler, name or "<no name>", role))

    scheduler.handle_comm = handle_comm


def unpickle_only_from_the_client() -> None:
    """In the requestor's scheduler process, unpickle only bytes the requestor's client sent.

    Distributed unpickles a message's ``ToPickle`` parts as it reads the message, before any
    handler or role check runs, and the requestor's client sends its graphs that way, so the
    scheduler cannot simply stop unpickling. Every comm read now says whose bytes it reads: a
    peer whose certificate names the client or the scheduler may send pickles; any other peer's
    pickle (in a request, on a worker's stream, or in a worker's answer to the scheduler's own
    ``get_data``) raises :class:`UnsafePayload` before a byte of it is unpickled, and that
    connection is dropped with a log line naming the peer. Outside reads the scheduler unpickles
    as before: its own pickles, and the client's graph its handler deserializes. No handler a
    worker may call unpickles what the worker sent (results stay undecoded bytes here). Nor may
    another peer's message make this process import a module (msgpack's ``__Enum__`` values).

    Process-wide and not undone: call it in the scheduler process only (a process that also runs
    plain, certificate-less clusters would refuse their pickles too). Idempotent.
    """
    protocol_pickle = importlib.import_module("distributed.protocol.pickle")
    serialize = importlib.import_module("distributed.protocol.serialize")
    tcp = importlib.import_module("distributed.comm.tcp")
    if getattr(tcp.TCP.read, "_golem_by_role", False):
        return
    original_loads = protocol_pickle.loads
    original_import = serialize.import_allowed_module
    original_read = tcp.TCP.read

    def loads(x: Any, *, buffers: Iterable[Any] = ()) -> Any:
        if _READING_A_PROVIDER.get():
            raise UnsafePayload("pickle", "only the requestor's client may send the scheduler a pickle")
        return original_loads(x, buffers=buffers)

    def import_allowed_module(name: str) -> Any:
        # msgpack decodes an ``__Enum__`` by importing the module it names: a provider may name only
        # one this process has imported already.
        if _READING_A_PROVIDER.get() and name not in sys.modules:
            raise UnsafePayload(name, "a message asked to import this module")
        return original_import(name)

    async def read(comm: Any, deserializers: Any = None) -> Any:
        role, name = peer_identity(comm.extra_info.get("peercert"))
        token = _READING_A_PROVIDER.set(role not in TRUSTED_ROLES)
        try:
            return await original_read(comm, deserializers)
        except UnsafePayload as refused:
            logger.warning(
                "The scheduler refused a payload from %s (%s, %s) and dropped the connection: %s",
                name or "<no name>",
                role.value if role else "no role",
                comm.peer_address,
                refused,
            )
            comm.abort()
            raise CommClosedError(f"refused a payload from {name or comm.peer_address}") from refused
        finally:
            _READING_A_PROVIDER.reset(token)

    read._golem_by_role = True  # type: ignore[attr-defined]
    _swap_everywhere(original_loads, loads, "loads")
    serialize.import_allowed_module = import_allowed_module
    tcp.TCP.read = read


def serve_peers_by_role(worker: Any) -> None:
    """A worker serves other workers :data:`PEER_HANDLERS` only; the scheduler and the client everything.

    For a provider's own worker (its meter's preload installs it): the session's other workers
    are other providers, and without this one of them could call ``run`` on this worker. Every
    lookup of a handler goes through the check, so handlers added later are covered too.
    """
    if not isinstance(worker.handlers, _RoleCheckedHandlers):
        worker.handlers = _RoleCheckedHandlers(worker.handlers)


class _RoleCheckedHandlers(dict):
    """A server's handlers, each outside :data:`PEER_HANDLERS` wrapped in a check of the caller's role."""

    def __getitem__(self, op: str) -> Callable[..., Any]:
        handler = super().__getitem__(op)
        return handler if op in PEER_HANDLERS else _role_checked(op, handler)


def _role_checked(op: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    takes_comm = _expects_comm(handler)

    async def guarded(comm: Comm, **arguments: Any) -> Any:
        role, name = peer_identity(comm.extra_info.get("peercert"))
        if role not in (Role.CLIENT, Role.SCHEDULER):
            logger.warning("Refused request %r from worker %s (%s): a worker may only fetch data", op, name, role)
            return _answer_refused(op, name or "<no name>")
        result = handler(comm, **arguments) if takes_comm else handler(**arguments)
        return await result if inspect.isawaitable(result) else result

    guarded.__name__ = getattr(handler, "__name__", op)
    return guarded


def _answer_refused(refused: str = "", peer: str = "") -> dict[str, Any]:
    return error_message(
        PeerRefused(
            f"The scheduler does not serve {refused!r} to a provider's worker ({peer}): a worker's certificate "
            "allows the worker protocol only."
        ),
        status="uncaught-error",  # the status distributed's rpc raises on the caller's side
    )


class _WorkerComm:
    """A worker's comm, as the scheduler reads it: every message checked against the worker's role."""

    def __init__(self, comm: Comm, scheduler: Any, name: str, role: Role | None) -> None:
        self._comm = comm
        self._scheduler = scheduler
        self._name = name
        self._role = role

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._comm, attribute)

    def __repr__(self) -> str:
        return f"<worker comm of {self._name}: {self._comm!r}>"

    async def read(self, deserializers: Any = None) -> Any:
        message = await self._comm.read(deserializers)
        if isinstance(message, dict):
            return self._request(message)
        if isinstance(message, (list, tuple)):
            return [m for m in message if self._streamed(m)]
        return message

    # ------------------------------------------------------------------ plain requests

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        why = self._why_not(op, message)
        if why is None:
            return message
        self._refuse(op, why)
        return {"op": _REFUSED, "reply": message.get("reply", True), "refused": str(op)[:100], "peer": self._name}

    def _why_not(self, op: object, message: dict[str, Any]) -> str | None:
        if op not in WORKER_HANDLERS:
            return "not part of the worker protocol"
        if op == "register-worker":
            if str(message.get("name")) != self._name:
                return f"registers as {message.get('name')!r}, but its certificate names {self._name}"
            return None
        named = _workers_named(op, message)
        if named is not None and not self._own(named):
            return f"names another worker ({', '.join(map(str, named))})"
        return None

    def _own(self, workers: Iterable[object]) -> bool:
        """Every worker named is one this peer registered (an address or a name of its own)."""
        mine = {a for a, ws in self._scheduler.workers.items() if str(ws.name) == self._name}
        return all(w in mine or str(w) == self._name for w in workers)

    # ------------------------------------------------------------------ the batched stream

    def _streamed(self, message: object) -> bool:
        if not isinstance(message, dict):
            return message == "OK"
        op = message.get("op")
        if op not in WORKER_STREAM:
            self._refuse(op, "not part of the worker protocol", stream=True)
            return False
        if "worker" in message:  # the scheduler says which worker a stream message came from
            self._refuse(op, "it names the worker it came from", stream=True)
            return False
        if op in ("task-finished", "task-erred") and self._elsewhere(message.get("key")):
            # Dask would take the result from whoever reports it with the right run id; a task
            # that another worker is running is that worker's to report. (A late report of a
            # task no one is running any more still reaches the meter, which bills it once.)
            self._refuse(op, f"reported task {message.get('key')!r}, which another worker is running", stream=True)
            return False
        return True

    def _elsewhere(self, key: object) -> bool:
        try:
            ts = self._scheduler.tasks.get(key)
        except TypeError:  # an unhashable key: no task of the scheduler's
            return False
        worker = getattr(ts, "processing_on", None) if ts is not None else None
        return worker is not None and str(worker.name) != self._name

    def _refuse(self, op: object, why: str, *, stream: bool = False) -> None:
        role = self._role.value if self._role else "no role"
        where = "stream message" if stream else "request"
        logger.warning(
            "Refused %s %r from provider %s (%s certificate, %s): %s",
            where,
            op,
            self._name,
            role,
            self._comm.peer_address,
            why,
        )


def _workers_named(op: str, message: dict[str, Any]) -> list[object] | None:
    """The workers a worker-protocol request acts on, or None if it names none."""
    if op in ("heartbeat_worker", "unregister"):
        return [message.get("address")]
    if op == "set_resources":
        return [message.get("worker")]
    if op == "retire_workers":
        named = list(message.get("workers") or []) + list(message.get("names") or [])
        return named or [None]  # retiring "whatever is idle" is not a worker's call
    return None
