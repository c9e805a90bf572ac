"""Holding sampled results in the requestor's scheduler until the requestor has checked them.

DESIGN.md section 6, "Results". :class:`Verifier` is a Dask ``SchedulerPlugin`` in the
requestor's scheduler process; the judging happens in the requestor's kernel
(:mod:`golem_jupyter.requestor.verification`), which decodes provider bytes only through the
restricted decoder (this process never decodes a result).

When a worker reports a task finished, the verifier draws a coin for it (``secrets``: no
provider sees it) with the verify fraction of the task's cell (the ``golem_verify`` annotation)
or of the session. A sampled report is *held*: the scheduler does not learn that the task is in
memory, so no client future resolves, no dependent starts and the task's graph stays open (the
meter prices a graph, and the requestor signs its vouchers, only once every task of it is done).
The worker that reported it is free, though, and is given its next task at once (the held task
counts as a seceded one does).
Meanwhile the same task runs again under a fresh key on a worker of another provider (a *twin*,
with the same inputs). Where the twin committed to the very bytes the held report did (see
below), the two agree and the report is released here; otherwise the kernel is told when both
are ready (``golem_verify_events``). The
twin's inputs pass through this process (fetched from a worker of another provider than the one
checked wherever one holds them, handed to the twin's worker under fresh keys, never decoded
here): a twin that fetched them itself might fetch them from the provider it checks, which could
doctor them to make the twin agree with its lie. The
kernel compares the two results and either releases the held report (``golem_verify_decide``)
or asks for a referee (``golem_verify_rerun`` on a third provider; with none, it runs the task
on the requestor's own machine, reading the task's spec with ``golem_verify_spec``). A provider
voted down is charged nothing for the graph, its workers are removed (so every result of it that
is still needed is computed again elsewhere), and the held report is dropped.

A report of a task that cannot be checked (no other provider and no kernel answer within
``CHECK_TIMEOUT``) is released with a warning: unchecked is not voted down.

Every report also carries the worker's commitment to the result (:func:`golem_jupyter.trust.commit`),
made before the worker could know whether the task is drawn. Every copy of a verified task's
result that reaches this process is digested and compared with it before it is used: the bytes
the kernel judges, a twin's inputs, and what the client gathers (this plugin serves the
scheduler's ``gather``). A provider that hands over other bytes than it committed to is convicted
as an outvoted one is, and the kernel is told (an event with a ``"fault"``). A copy another
provider's worker holds that does not match is passed over for the next holder. A verified task
reported without a commitment is held whatever the draw, and the bytes its check judges become
its commitment.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from dask.sizeof import sizeof
from distributed.core import Status, error_message
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.serialize import Serialize
from distributed.utils import key_split
from distributed.worker import get_data_from_worker

from ..errors import InvalidInput, VerificationError
from ..market.certificates import peer_identity
from ..trust import COMMITMENT, digest_payload, is_commitment
from ..trust._authorization import TRUSTED_ROLES
from ..trust._sampling import Sampler
from ..trust._transfers import COMMITTED_DATA, INPUT_COMMITMENTS

logger = logging.getLogger(__name__)

ANNOTATION = "golem_verify"
"""Task annotation holding a cell's own verify fraction (``%%golem --verify F``)."""

CLIENT = "golem-verifier"
"""The scheduler-side client that wants the twins (no real client connects under this name)."""

CHECK_TIMEOUT = 300.0
"""Seconds a held report waits for the kernel's verdict before it is released unchecked."""

BUSY_PATIENCE = 60.0
"""Seconds to keep asking a worker for a result while it answers that it is busy."""

FETCH_TIMEOUT = 120.0
"""Seconds a worker has to hand over a result it reported done. One that does not (a provider
stalling its own check until the check would lapse) counts as having handed over nothing: a
failed vote, which the re-runs outvote."""

JUDGED_BYTES = 256 << 20
"""At most this many bytes of judged results are kept to hand on as inputs (the oldest go first)."""

DIGEST_IN_A_THREAD = 1 << 20
"""Payloads from this many bytes up are digested off the event loop (hashlib lets go of the GIL)."""


@dataclass
class Check:
    """One held report and the re-runs made to judge it."""

    check_id: str
    key: Any
    worker: str
    """The address of the worker whose report is held."""
    provider: str
    message: dict[str, Any]
    graph_id: str | None
    held_at: float = field(default_factory=time.monotonic)
    reruns: dict[Any, dict[str, Any]] = field(default_factory=dict)
    """Twin key -> {"provider", "worker", "state"} for each re-run of the task."""
    inputs: list[Any] = field(default_factory=list)
    """Keys of the copies of the task's inputs this process handed to its re-runs' workers."""
    payload: Any = None
    """The held result as the kernel fetched it to judge it (undecoded), once it has."""
    decided: bool = False


class Verifier(SchedulerPlugin):
    """Holds sampled reports, runs their twins, and carries out the kernel's verdicts."""

    name = "golem-verifier"

    def __init__(self, meter: Any = None) -> None:
        self.scheduler: Any = None
        self.meter = meter
        self.fraction = 0.0
        self.rng: random.Random | None = None
        """``secrets.SystemRandom``, made in the scheduler process when it starts: no provider sees a draw."""
        self.checks: dict[str, Check] = {}
        self.by_key: dict[Any, str] = {}
        self.twins: dict[Any, str] = {}
        self.events: deque[dict[str, Any]] = deque()
        self._event: asyncio.Event | None = None
        self._placing: set[asyncio.Future] = set()
        """Re-runs whose inputs are on their way to the re-run's worker."""
        self.judged: dict[Any, tuple[Any, int]] = {}
        """Key -> (the bytes that passed its check, their size), while the key is in memory: what a
        later re-run gets as that input, instead of asking the provider again (it could hand over
        something else than what passed)."""
        self._judged_bytes = 0
        self._finished: Any = None
        self.producers: dict[Any, str] = {}
        """Key -> the provider whose report of it Dask accepted (until the key is forgotten): what to
        compute again when that provider is voted down."""
        self.excluded: set[str] = set()
        """Providers voted down in this session: no task of theirs is trusted again."""
        self.counts = {"held": 0, "released": 0, "agreed": 0, "dropped": 0, "unchecked": 0, "reruns": 0}

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        if self.rng is None:
            self.rng = secrets.SystemRandom()
        self._event = asyncio.Event()
        scheduler.handlers["golem_verify_configure"] = self.configure
        scheduler.handlers["golem_verify_events"] = self.next_events
        scheduler.handlers["golem_verify_rerun"] = self.rerun
        scheduler.handlers["golem_verify_decide"] = self.decide
        scheduler.handlers["golem_verify_spec"] = self.spec
        scheduler.handlers["golem_verify_inputs"] = self.inputs
        scheduler.handlers["golem_verify_state"] = self.state
        scheduler.handlers["golem_verify_fetch"] = self.fetch
        self._finished = scheduler.stream_handlers["task-finished"]
        scheduler.stream_handlers["task-finished"] = self._on_finished
        self._gather = scheduler.handlers["gather"]
        scheduler.handlers["gather"] = self.gather
        scheduler.handlers[COMMITTED_DATA] = self.committed_data
        self._task_to_msg = scheduler._task_to_msg
        scheduler._task_to_msg = self._task_with_input_commitments
        asyncio.get_running_loop().call_later(CHECK_TIMEOUT / 10, self._expire)

    # ------------------------------------------------------------------ handlers

    def configure(self, fraction: float | None = None) -> dict[str, Any]:
        """Set the session's verify fraction (a cell's ``golem_verify`` annotation overrides it)."""
        if fraction is not None:
            fraction = float(fraction)
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"verify fraction must be from 0 to 1, not {fraction}")
            self.fraction = fraction
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "open_checks": len(self.checks), **self.counts}

    async def next_events(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Checks ready to judge (the held result and its re-runs are in memory or failed)."""
        assert self._event is not None
        if not self.events:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                pass
        out = list(self.events)
        self.events.clear()
        return out

    def rerun(self, check_id: str, exclude: list[str]) -> dict[str, Any]:
        """Run the check's task once more on a provider not in ``exclude``; says whether one was found."""
        check = self.checks.get(check_id)
        if check is None or check.decided:
            return {"started": False, "reason": "no such open check"}
        twin = self._twin(check, set(exclude) | self.excluded)
        return {"started": twin is not None, "twin": twin}

    async def fetch(self, check_id: str, key: Any) -> dict[str, Any]:
        """The bytes of the held result or of one of its re-runs, from the worker holding it, for the
        kernel to decode (this process does not decode them): ``{"status": "OK", "data": {key: ...}}``."""
        check = self.checks.get(check_id)
        if check is None:
            return {"status": "gone"}
        if key == check.key:
            worker, provider = check.worker, check.provider
        elif str(key) in check.reruns:
            worker, provider = check.reruns[str(key)]["worker"], check.reruns[str(key)]["provider"]
        else:
            return {"status": "gone"}
        try:
            response = await self._get_data(worker, [key])
        except (OSError, TimeoutError) as error:
            return {"status": "error", "error": f"{type(error).__name__}: {error}"}
        if response.get("status") != "OK" or key not in response.get("data", {}):
            return {"status": "error", "error": f"the worker answered {response.get('status')!r} without the result"}
        payload = response["data"][key]
        served = await self._digest(payload)
        if key == check.key:
            metadata = check.message.setdefault("metadata", {})
            committed = metadata.get(COMMITMENT)
            if not is_commitment(committed):
                # It reported no commitment (so its report was held whatever the draw): the bytes
                # judged now are the ones every later copy of this result must match.
                metadata[COMMITMENT] = committed = served
            if served != committed:
                await self._equivocated(provider, key, check.graph_id, committed, served)
                return {"status": "gone"}
            check.payload = payload
        else:
            ts = self.scheduler.tasks.get(key)
            committed = (ts.metadata or {}).get(COMMITMENT) if ts is not None else None
            if is_commitment(committed) and served != committed:
                await self._equivocated(provider, key, check.graph_id, committed, served)
                return {"status": "error", "error": "its worker handed over other bytes than it committed to"}
        return {"status": "OK", "data": {key: payload}}

    async def gather(self, keys: list[Any], serializers: list[str] | None = None) -> dict[str, Any]:
        """The scheduler's ``gather`` (what a client's ``result()`` asks for), checking each result of
        a verified task against its worker's commitment: a provider that hands the client other
        bytes than it committed to (and than a check of the task would have judged) is caught here,
        and the result is computed again elsewhere (the client asks again, as for lost data)."""
        bound = {key: c for key in keys if (c := self._binding(key)) is not None}
        if not bound:
            return await self._gather(keys=keys, serializers=serializers)
        rest = [key for key in keys if key not in bound]
        response = await self._gather(keys=rest, serializers=serializers) if rest else {"status": "OK", "data": {}}
        if response.get("status") != "OK":
            return response
        committed = await self._serve_committed(bound)
        if committed["status"] != "OK":
            return committed
        response["data"].update(committed["data"])
        return response

    async def committed_data(self, comm: Any, keys: list[Any]) -> dict[str, Any]:
        """A worker's request for inputs a peer handed it otherwise than committed: the copies this
        scheduler holds to their commitments (:mod:`golem_jupyter.trust._transfers`). A provider's
        worker gets only inputs of a task running on that provider's workers (each request has
        this process fetch from the holders), and only keys a check holds to a commitment."""
        provider = _provider_of(comm)
        wanted = [key for key in keys if provider is None or self._read_by(key, provider)]
        bound = {key: c for key in wanted if (c := self._binding(key)) is not None}
        if len(bound) < len(keys):
            return {"status": "error", "keys": [key for key in keys if key not in bound]}
        return await self._serve_committed(bound)

    async def _serve_committed(self, bound: dict[Any, str]) -> dict[str, Any]:
        """``{"status": "OK", "data": ...}`` with each key's copy as committed; else an error naming
        the keys no worker handed over as committed, which are computed again (whoever asked,
        told to ask again, would otherwise ask for the same copies forever)."""
        payloads = await self._bound_payloads(bound)
        missing = [key for key in bound if payloads.get(key) is None]
        if not missing:
            return {"status": "OK", "data": payloads}
        tasks = self.scheduler.tasks
        again = {key: "released" for key in missing if key in tasks and tasks[key].state == "memory"}
        if again:
            logger.warning("No worker handed over %d result(s) as committed; computing them again.", len(again))
            self.scheduler.transitions(again, f"golem-uncommitted-{time.time()}")
        return {"status": "error", "keys": missing}

    def _read_by(self, key: Any, provider: str) -> bool:
        """Whether a task processing on a worker of ``provider`` has ``key`` as an input."""
        ts = self._task(key)
        return ts is not None and any(
            dts.processing_on is not None and str(dts.processing_on.name) == provider for dts in ts.dependents or ()
        )

    def _task_with_input_commitments(self, ts: Any) -> dict[str, Any]:
        """Dask's message sending ``ts`` to a worker, with the commitments of its inputs: the worker
        refuses a copy from a peer that does not match (:mod:`golem_jupyter.trust._transfers`)."""
        msg = self._task_to_msg(ts)
        bound = {dts.key: c for dts in ts.dependencies if (c := self._commitment_of(dts)) is not None}
        if bound:
            msg["annotations"] = {**msg["annotations"], INPUT_COMMITMENTS: bound}
        return msg

    def _binding(self, key: Any) -> str | None:
        """The commitment a copy of ``key`` must match before it is handed on, or None when it need
        not (the task is not verified, or it was used unchecked)."""
        ts = self._task(key)
        return self._commitment_of(ts) if ts is not None else None

    def _commitment_of(self, ts: Any) -> str | None:
        if ts.state != "memory" or not self._fraction(ts):
            return None
        committed = (ts.metadata or {}).get(COMMITMENT)
        return committed if is_commitment(committed) else None

    def _task(self, key: Any) -> Any:
        try:
            return self.scheduler.tasks.get(key)
        except TypeError:  # an unhashable key, from a peer: no task of this scheduler's
            return None

    async def _bound_payloads(self, bound: dict[Any, str], avoid: str | None = None) -> dict[Any, Any]:
        """Each key's bytes as a worker hands them over, once they match the key's commitment: asked
        of the workers holding it (those of ``avoid``, the provider a check judges, last), the
        keys one worker holds in one request. A copy that does not match its commitment is
        not used: if the provider that committed to it handed it over, that provider is convicted;
        a copy another worker holds is passed over for the next. None for a key no worker
        handed over as committed."""
        payloads: dict[Any, Any] = {}
        pending = dict(bound)
        asked: dict[Any, set[str]] = {key: set() for key in bound}
        while pending:
            plan: dict[str, list[Any]] = {}
            for key in list(pending):
                if key in self.judged:  # these very bytes passed a check
                    payloads[key] = self.judged[key][0]
                    del pending[key]
                    continue
                holder = self._holder(key, asked[key], avoid)
                if holder is None:
                    payloads[key] = None
                    del pending[key]
                else:
                    plan.setdefault(holder, []).append(key)
            answers = await asyncio.gather(
                *(self._get_data(worker, keys) for worker, keys in plan.items()), return_exceptions=True
            )
            for (worker, keys), answer in zip(plan.items(), answers, strict=True):
                data = answer.get("data", {}) if isinstance(answer, dict) and answer.get("status") == "OK" else {}
                ws = self.scheduler.workers.get(worker)
                provider = str(ws.name) if ws is not None else None
                for key in keys:
                    asked[key].add(worker)
                    if key not in pending or key not in data:
                        continue
                    served = await self._digest(data[key])
                    if served == pending[key]:
                        payloads[key] = data[key]
                        del pending[key]
                    elif provider is not None and provider == self.producers.get(key):
                        committed = pending.pop(key)
                        payloads[key] = None
                        await self._equivocated(provider, key, self._graph_of(key), committed, served)
                    else:
                        logger.warning(
                            "The copy of %r on %s does not match the commitment of the provider that computed it; "
                            "asking another holder.", key, worker,
                        )  # fmt: skip
        return payloads

    def _holder(self, key: Any, asked: set[str], avoid: str | None) -> str | None:
        """A worker holding ``key`` not yet asked for it: the producer's first (its bytes are what
        was committed to), ``avoid``'s last, never one of a provider voted down."""
        ts = self.scheduler.tasks.get(key)
        producer = self.producers.get(key)
        holders = [
            ws
            for ws in sorted(ts.who_has or (), key=lambda ws: ws.address)
            if ws.address not in asked and str(ws.name) not in self.excluded
        ] if ts is not None else []  # fmt: skip
        if not holders:
            return None
        best = min(holders, key=lambda ws: (str(ws.name) == avoid, str(ws.name) != producer))
        return best.address

    async def _digest(self, payload: Any) -> str:
        if _size(payload) >= DIGEST_IN_A_THREAD:
            return await asyncio.to_thread(digest_payload, payload)
        return digest_payload(payload)

    async def _get_data(self, worker: str, keys: list[Any]) -> dict[str, Any]:
        """``get_data`` of ``keys`` from ``worker``, asked again while it answers "busy" (it is serving
        as many transfers as it may at once, which says nothing of its results), as Dask's own
        workers do, for up to ``BUSY_PATIENCE`` seconds."""
        delay, deadline = 0.01, time.monotonic() + BUSY_PATIENCE
        while True:
            response = await asyncio.wait_for(
                get_data_from_worker(self.scheduler.rpc, keys, worker, who=self.scheduler.address), FETCH_TIMEOUT
            )
            if response.get("status") != "busy" or time.monotonic() > deadline or worker not in self.scheduler.workers:
                return response
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    def _keep_judged(self, key: Any, payload: Any) -> None:
        size = _size(payload)
        if size > JUDGED_BYTES:
            return
        self._forget_judged(key)
        self.judged[key] = (payload, size)
        self._judged_bytes += size
        while self._judged_bytes > JUDGED_BYTES:
            self._forget_judged(next(iter(self.judged)))  # the oldest

    def _forget_judged(self, key: Any) -> None:
        _, size = self.judged.pop(key, (None, 0))
        self._judged_bytes -= size

    async def inputs(self, check_id: str) -> dict[str, Any]:
        """The inputs of the check's task for a re-run on the requestor's own machine, fetched as
        for a twin (not from the provider checked where another holds them):
        ``{"status": "OK", "data": {key: ...}}``, the bytes undecoded."""
        check = self.checks.get(check_id)
        ts = self.scheduler.tasks.get(check.key) if check else None
        if check is None or ts is None:
            return {"status": "gone"}
        try:
            return {"status": "OK", "data": await self._fetch_inputs(ts, check.provider)}
        except (OSError, TimeoutError, RuntimeError) as error:
            return {"status": "error", "error": f"{type(error).__name__}: {error}"}

    def spec(self, check_id: str) -> bytes | None:
        """The task's spec, pickled, for a re-run on the requestor's own machine (trusted: it came
        from the requestor's client)."""
        check = self.checks.get(check_id)
        ts = self.scheduler.tasks.get(check.key) if check else None
        if ts is None or ts.run_spec is None:
            return None
        return cloudpickle.dumps(ts.run_spec, protocol=pickle.HIGHEST_PROTOCOL)

    async def decide(
        self,
        check_id: str,
        release: bool,
        faulty: list[str] | None = None,
        mismatch: bool = False,
        fail: str | None = None,
    ) -> dict[str, Any]:
        """Carry out a verdict: release (or drop) the held report; charge each provider in ``faulty``
        nothing for the graph and remove its workers. ``mismatch``: the results disagreed (a referee
        decided), for the graph's receipt. ``fail``: the results disagreed and nothing could decide;
        the task fails with this message instead of using either."""
        check = self.checks.get(check_id)
        if check is None:
            return {"done": False}
        if fail is not None:
            self._close(check)
            self.counts["dropped"] += 1
            self._fail(check, fail)
            return {"done": True, "graph_id": check.graph_id}
        if mismatch and self.meter is not None:
            self.meter.note_check(check.graph_id, mismatch=True)
        faulty = [str(p) for p in faulty or []]
        self._condemn(faulty, check.graph_id)  # before the release: it may complete (and price) the graph
        self._close(check)
        tainted = self._tainted(set(faulty)) if faulty else set()
        if release and check.provider not in faulty and check.key not in tainted:
            if self._release(check) and check.payload is not None:
                self._keep_judged(check.key, check.payload)
        else:
            self.counts["dropped"] += 1
        await self._purge(faulty, tainted)
        return {"done": True, "graph_id": check.graph_id}

    # ------------------------------------------------------------------ convicting providers

    def _condemn(self, providers: list[str], graph_id: str | None) -> None:
        """No task of ``providers`` is trusted again, and none is paid for the graph."""
        for provider in providers:
            self.excluded.add(provider)
            if self.meter is not None and graph_id is not None:
                self.meter.forfeit(graph_id, provider)

    async def _purge(self, providers: list[str], tainted: set[Any]) -> None:
        """Remove the workers of ``providers`` and compute again what they returned (``tainted``)."""
        for other in [c for c in self.checks.values() if c.key in tainted]:
            self._void(other)  # its task ran on values of a provider voted down: it runs again
        for provider in providers:
            await self._remove_provider(provider)
        self._recompute(tainted)

    async def _equivocated(self, provider: str, key: Any, graph_id: str | None, committed: str, served: str) -> None:
        """``provider`` handed over bytes for ``key`` other than those it committed to in its report:
        convicted as an outvoted provider is, and the kernel is told (it reports the fault)."""
        if provider in self.excluded:
            return
        logger.warning(
            "Provider %s handed over a result for %r that does not match its own report's commitment.", provider, key
        )
        caught = {"provider": provider, "key": key, "graph_id": graph_id, "committed": committed, "served": served}
        self.events.append({"fault": caught})
        if self._event is not None:
            self._event.set()
        self._condemn([provider], graph_id)
        await self._purge([provider], self._tainted({provider}))

    # ------------------------------------------------------------------ holding reports

    def _on_finished(self, **msg: Any) -> Any:
        key, worker = msg.get("key"), msg.get("worker")
        ws = self.scheduler.workers.get(worker) if isinstance(worker, str) else None
        if ws is not None and str(ws.name) in self.excluded:
            return None  # a provider voted down: its late reports are not believed
        try:
            twin_of = self.twins.get(key)
        except TypeError:  # an unhashable key: no task of the scheduler's, Dask drops the report
            return self._finished(**msg)
        if twin_of is None and key in self.by_key:
            # Only the held report counts: another one (a second report of the same run, with
            # another commitment) would reach Dask and the client past the check.
            logger.warning("Dropped a second report of %r from %s: its first report is held.", key, worker)
            return None
        if twin_of is not None or not self._sampled(key, ws, msg):
            return self._finished(**msg)
        check = Check(uuid.uuid4().hex, key, worker, str(ws.name), msg, self._graph_of(key))
        if self.meter is not None:
            self.meter.note_check(check.graph_id)
        self.checks[check.check_id] = check
        self.by_key[key] = check.check_id
        self.counts["held"] += 1
        if self._twin(check, {check.provider} | self.excluded) is None:
            self._announce(check)  # no other provider: the kernel re-runs it on the requestor's machine
        self._free_thread(key, ws, msg.get("run_id"))
        return None

    def _free_thread(self, key: Any, ws: Any, run_id: Any) -> None:
        """The worker has finished the held task and its thread is free: count the task the way Dask
        counts a seceded (long-running) one, so the worker gets its next task while the check runs
        instead of idling for the twin and the verdict, and the task is not stolen meanwhile."""
        scheduler = self.scheduler
        ts = scheduler.tasks.get(key)
        if ts is None or ts.processing_on is not ws or ts.run_id != run_id or ts in ws.long_running:
            return
        stealing = scheduler.extensions.get("stealing")
        if stealing is not None:
            stealing.remove_key_from_stealable(ts)
        ws.add_to_long_running(ts)
        scheduler.check_idle_saturated(ws)
        scheduler.stimulus_queue_slots_maybe_opened(stimulus_id=f"golem-verify-held-{time.time()}")

    def _sampled(self, key: Any, ws: Any, message: dict[str, Any]) -> bool:
        if ws is None or key in self.by_key:
            return False
        ts = self.scheduler.tasks.get(key)
        if ts is None or ts.state != "processing" or ts.run_spec is None:
            return False
        fraction = self._fraction(ts)
        if fraction and not is_commitment((message.get("metadata") or {}).get(COMMITMENT)):
            return True  # a verified task reported with no commitment: checked, whatever the draw
        return bool(Sampler(fraction, rng=self.rng).choose([key]))

    def _fraction(self, ts: Any) -> float:
        """The verify fraction of a task: its cell's (``golem_verify`` annotation), or the session's."""
        annotated = (ts.annotations or {}).get(ANNOTATION)
        if annotated is None:  # on every task sent to a worker, for each input: no Sampler to build
            return self.fraction
        try:
            return Sampler(annotated, rng=self.rng).fraction
        except InvalidInput:  # a cell's annotation that is no fraction: the session's applies
            return self.fraction

    def _graph_of(self, key: Any) -> str | None:
        return self.meter.key_graph.get(key) if self.meter is not None else None

    def _twin(self, check: Check, exclude: set[str]) -> Any:
        """Start a re-run of ``check``'s task under a fresh key on a worker of a provider not in
        ``exclude``; its key, or None when there is no such worker."""
        scheduler = self.scheduler
        ts = scheduler.tasks.get(check.key)
        if ts is None or ts.run_spec is None:
            return None
        workers = [
            ws.address
            for ws in scheduler.workers.values()
            if str(ws.name) not in exclude and ws.status == Status.running
        ]
        if not workers:
            return None
        # Named like any task of its kind: the provider that runs it cannot tell a check from work.
        twin = f"{key_split(check.key)}-{uuid.uuid4().hex}"
        if self.meter is not None and check.graph_id is not None:
            self.meter.adopt_rerun(twin, check.graph_id)
        self.twins[twin] = check.check_id
        check.reruns[twin] = {"provider": None, "worker": None, "state": "waiting"}
        self.counts["reruns"] += 1
        if not ts.dependencies:
            self._submit(twin, ts.run_spec.substitute({}, key=twin), workers)
            return twin
        # Its inputs go through this process: were the re-run's worker to fetch them itself, it could
        # fetch them from the provider being checked, which could hand it inputs doctored to make the
        # re-run agree with its lie.
        worker = min(workers, key=lambda address: len(scheduler.workers[address].processing))
        task = asyncio.ensure_future(self._submit_with_inputs(check, twin, ts, worker))
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)
        return twin

    async def _submit_with_inputs(self, check: Check, twin: Any, ts: Any, worker: str) -> None:
        """Fetch the inputs of ``ts`` here, from a worker of another provider than the one checked
        where one holds them, hand copies under fresh keys to ``worker`` and run the twin there on them."""
        try:
            inputs = await self._fetch_inputs(ts, check.provider)
            copies = {key: f"{key_split(key)}-{uuid.uuid4().hex}" for key in inputs}
            payloads = {copies[key]: payload for key, payload in inputs.items()}
            nbytes = {copies[dts.key]: dts.get_nbytes() for dts in ts.dependencies}
            if twin not in self.twins or self.scheduler.workers.get(worker) is None:
                return  # decided, or the worker left, meanwhile
            check.inputs += list(payloads)
            stimulus_id = f"golem-verify-inputs-{time.time()}"
            await self.scheduler.rpc(worker).update_data(data=payloads, stimulus_id=stimulus_id)
            self.scheduler.update_data(who_has={k: [worker] for k in payloads}, nbytes=nbytes, client=CLIENT)
            if twin not in self.twins:  # decided while the copies were on their way: nothing needs them
                self.scheduler.client_releases_keys(keys=list(payloads), client=CLIENT, stimulus_id=stimulus_id)
                return
            self._submit(twin, ts.run_spec.substitute(copies, key=twin), [worker])
        except Exception as error:  # noqa: BLE001 (a re-run that cannot start is a failed vote, never a crash)
            logger.warning("A check's re-run of %r could not be started: %s", check.key, error)
            rerun = check.reruns.get(twin)
            if rerun is not None and twin in self.twins and rerun["state"] == "waiting":
                rerun.update(state="erred", error=f"its inputs could not be handed over: {error}"[:500])
                if all(r["state"] in ("memory", "erred") for r in check.reruns.values()):
                    self._announce(check)

    async def _fetch_inputs(self, ts: Any, checked: str) -> dict[Any, Any]:
        """The inputs of ``ts`` as the workers send them (not decoded here), each from a worker of
        another provider than ``checked`` where one holds it, and each matching the commitment of
        the provider that computed it."""
        bound = {dts.key: (dts.metadata or {}).get(COMMITMENT) for dts in ts.dependencies}
        inputs = await self._bound_payloads(
            {key: committed for key, committed in bound.items() if is_commitment(committed) or key in self.judged},
            avoid=checked,
        )
        for key in [key for key in bound if key not in inputs]:  # no commitment: taken as handed over
            source = self._holder(key, set(), avoid=checked)
            response = await self._get_data(source, [key]) if source is not None else {}
            if response.get("status") == "OK" and key in response.get("data", {}):
                inputs[key] = response["data"][key]
        for key in bound:
            if inputs.get(key) is None:
                raise RuntimeError(f"no worker handed over the input {key!r} as its provider committed to it")
        return inputs

    def _submit(self, twin: Any, spec: Any, workers: list[str]) -> None:
        self.scheduler._create_taskstate_from_graph(
            start=time.time(),
            dsk={twin: spec},
            keys={twin},
            ordered={twin: 0},
            client=CLIENT,
            annotations_by_type={"workers": {twin: workers}, "allow_other_workers": {twin: False}},
            global_annotations=None,
            stimulus_id=f"update-graph-{time.time()}",  # as a client's graph: workers see nothing special
            submitting_task=None,
            span_metadata={"collections": []},
            user_priority=1,
        )

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        try:
            check_id = self.twins.get(key)
        except TypeError:
            return
        if finish == "forgotten":
            self.producers.pop(key, None)
        elif start == "processing" and finish == "memory" and check_id is None:
            # The report Dask accepted (not one it dropped as stale) names who computed the result.
            ws = self.scheduler.workers.get(kwargs.get("worker"))
            if ws is not None:
                self.producers[key] = str(ws.name)
        if start == "memory" or finish == "forgotten":
            self._forget_judged(key)  # computed again (or gone): what was judged is not its value
        if check_id is None or finish not in ("memory", "erred", "forgotten", "no-worker"):
            return
        check = self.checks.get(check_id)
        if check is None:
            return
        ts = self.scheduler.tasks.get(key)
        rerun = check.reruns[key]
        if finish in ("forgotten", "no-worker"):
            # Lost before it finished (its worker left, with it or with the inputs handed to it), or no
            # worker that may run it is left. Leaving is no lie: the re-run is no vote at all, and the
            # kernel, told of the check again, finds a referee instead of waiting for a result that
            # will not come.
            if rerun["state"] != "waiting":
                return
            del check.reruns[key]
            self.twins.pop(key, None)
            if finish == "no-worker":
                self.scheduler.client_releases_keys(keys=[key], client=CLIENT, stimulus_id=stimulus_id)
            if all(r["state"] in ("memory", "erred") for r in check.reruns.values()):
                self._announce(check)
            return
        rerun["state"] = finish
        if finish == "memory" and ts is not None and ts.who_has:
            ws = next(iter(ts.who_has))
            rerun["worker"], rerun["provider"] = ws.address, str(ws.name)
        elif finish == "erred":
            rerun["error"] = str(kwargs.get("exception_text") or "the re-run failed")[:500]
            worker = kwargs.get("worker")
            ws = self.scheduler.workers.get(worker) if isinstance(worker, str) else None
            rerun["worker"], rerun["provider"] = worker, str(ws.name) if ws is not None else None
        if all(r["state"] in ("memory", "erred") for r in check.reruns.values()):
            if self._agree(check):
                # Not inside Dask's transition of the twin: releasing forgets the twin.
                asyncio.get_running_loop().call_soon(self._release_agreed, check.check_id)
            else:
                self._announce(check)

    def _agree(self, check: Check) -> bool:
        """Whether every re-run committed to the very bytes the held report committed to: equal
        bytes are equal values, so the kernel need not fetch, decode and compare them. (Each
        provider commits before it could see another's commitment, and each is held to its own
        wherever its bytes are fetched.)"""
        committed = (check.message.get("metadata") or {}).get(COMMITMENT)
        if not is_commitment(committed) or not check.reruns:
            return False
        for twin, rerun in check.reruns.items():
            ts = self.scheduler.tasks.get(twin)
            if rerun["state"] != "memory" or ts is None or (ts.metadata or {}).get(COMMITMENT) != committed:
                return False
        return True

    def _release_agreed(self, check_id: str) -> None:
        """Release a held report its re-runs agree with byte for byte, and tell the kernel (it counts
        the check)."""
        check = self.checks.get(check_id)
        if check is None or check.decided:
            return  # voided meanwhile (its worker left, a provider was convicted)
        if not self._agree(check):
            self._announce(check)
            return
        self._close(check)
        self.counts["agreed"] += 1
        self._release(check)
        self.events.append({"agreed": check.check_id, "key": check.key, "graph_id": check.graph_id})
        if self._event is not None:
            self._event.set()

    def _announce(self, check: Check) -> None:
        self.events.append(
            {
                "check": check.check_id,
                "key": check.key,
                "worker": check.worker,
                "provider": check.provider,
                "graph_id": check.graph_id,
                "reruns": {str(k): dict(v) for k, v in check.reruns.items()},
            }
        )
        if self._event is not None:
            self._event.set()

    def _release(self, check: Check) -> bool:
        """Hand the held report to the scheduler, if the task still waits for that very report (True)."""
        ts = self.scheduler.tasks.get(check.key)
        message = check.message
        if (
            ts is not None
            and ts.state == "processing"
            and ts.processing_on is not None
            and ts.processing_on.address == check.worker
            and ts.run_id == message.get("run_id")
        ):
            self.counts["released"] += 1
            self._finished(**message)
            return True
        return False  # the task moved on (its worker left, it was cancelled): Dask would drop this report too

    def _tainted(self, providers: set[str]) -> set[Any]:
        """Every result those providers returned that Dask still holds, and every task that read one of
        them (directly or further down): all of it is computed again."""
        tasks = self.scheduler.tasks
        stack = [key for key, provider in self.producers.items() if provider in providers and key in tasks]
        tainted: set[Any] = set()
        while stack:
            key = stack.pop()
            if key in tainted:
                continue
            tainted.add(key)
            stack += [dts.key for dts in tasks[key].dependents or () if dts.key not in tainted]
        return tainted

    def _recompute(self, keys: set[Any]) -> None:
        """Release ``keys`` that are in memory or running: Dask computes again those still wanted."""
        tasks = self.scheduler.tasks
        recommendations = {k: "released" for k in keys if k in tasks and tasks[k].state in ("memory", "processing")}
        for key in keys:
            self.producers.pop(key, None)
        if recommendations:
            logger.warning(
                "Computing %d result(s) again: a provider voted down returned them, or they were made from its.",
                len(recommendations),
            )
            self.scheduler.transitions(recommendations, f"golem-recompute-{time.time()}")

    def _void(self, check: Check) -> None:
        self._close(check)
        self.counts["dropped"] += 1

    def _fail(self, check: Check, message: str) -> None:
        """Fail the held task with ``message`` (its dependents fail with it, and the client hears why)."""
        ts = self.scheduler.tasks.get(check.key)
        if ts is None or ts.state != "processing":
            return
        error = error_message(VerificationError(message))
        stimulus_id = f"golem-verify-failed-{time.time()}"
        details = dict(
            cause=check.key,
            exception=error["exception"],
            traceback=error["traceback"],
            exception_text=error["exception_text"],
            traceback_text=error["traceback_text"],
            worker=check.worker,
        )
        recs, client_msgs, worker_msgs = self.scheduler._transition(check.key, "erred", stimulus_id, **details)
        self.scheduler._transitions(recs, client_msgs, worker_msgs, stimulus_id)
        self.scheduler.send_all(client_msgs, worker_msgs)

    def _close(self, check: Check) -> None:
        """``check`` is over: no verdict, re-run or input copy of it is wanted any more."""
        self.checks.pop(check.check_id, None)
        check.decided = True
        self.by_key.pop(check.key, None)
        self._forget_twins(check)

    def _forget_twins(self, check: Check) -> None:
        for twin in check.reruns:
            self.twins.pop(twin, None)
        if check.reruns or check.inputs:
            self.scheduler.client_releases_keys(
                keys=[*check.reruns, *check.inputs], client=CLIENT, stimulus_id=f"client-releases-keys-{time.time()}"
            )

    async def _remove_provider(self, provider: str) -> None:
        for ws in [ws for ws in self.scheduler.workers.values() if str(ws.name) == provider]:
            logger.warning("Removing the workers of %s: it returned a result the check voted down.", provider)
            await self.scheduler.remove_worker(ws.address, stimulus_id=f"golem-verify-fault-{time.time()}", close=True)

    def _expire(self) -> None:
        """Release reports held past ``CHECK_TIMEOUT`` (no kernel answered): unchecked, not voted down."""
        now = time.monotonic()
        for check in [c for c in self.checks.values() if now - c.held_at > CHECK_TIMEOUT]:
            logger.warning("Task %r could not be checked within %.0f s; its result is used unchecked.", check.key,
                           CHECK_TIMEOUT)  # fmt: skip
            self._close(check)
            self.counts["unchecked"] += 1
            self._release(check)
        if self.scheduler.status == Status.running:
            asyncio.get_running_loop().call_later(CHECK_TIMEOUT / 10, self._expire)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A held report of a worker that left is void (Dask recomputes the task); a twin it held is
        gone too: the kernel hears of the check again once the task's next report is judged."""
        for check in [c for c in self.checks.values() if c.worker == worker]:
            self._close(check)


def _provider_of(comm: Any) -> str | None:
    """The provider a worker's connection belongs to (its certificate's name), or None for the
    requestor's own side, or a plain connection (an in-process cluster without TLS)."""
    extra = getattr(comm, "extra_info", None) or {}
    if "peercert" not in extra:
        return None
    role, name = peer_identity(extra["peercert"])
    return None if role in TRUSTED_ROLES else name or ""


def _size(payload: Any) -> int:
    """Bytes in a payload as a worker sent it (frames undecoded, or plain bytes; over an in-process
    comm, the value itself, as Dask estimates it)."""
    if isinstance(payload, Serialize):
        return sizeof(payload.data)
    frames = getattr(payload, "frames", None)
    if frames is not None:
        return sum(memoryview(frame).nbytes for frame in frames)
    try:
        return memoryview(payload).nbytes
    except TypeError:
        return 0
