"""The requestor's half of ``--verify``: judging the results its scheduler holds back.

DESIGN.md section 6, "Results". The scheduler's :class:`~golem_jupyter.scheduler.verify.Verifier`
holds a sampled task's result and re-runs the task under a fresh key on another provider. Where
both committed to the same bytes the scheduler releases the result itself and only tells this
side to count the check (``"agreed"`` events); otherwise, here in the kernel, both results are
fetched through the scheduler and decoded with the restricted decoder, and compared
(:func:`golem_jupyter.trust.compare`: exact for integers, strings and other values, ``allclose``
for floating point). When they agree the result is released to Dask. When
they do not, a referee decides: a third provider, or with none left, the requestor's own machine
(the task's spec, which came from this process, run once in a child process on inputs fetched
from the scheduler). Every provider outvoted is a :class:`Fault`: the scheduler charges it nothing
for the graph, removes its workers and drops its result (so the task, and whatever else of it is
still needed, is computed again elsewhere), and the cluster reports it on-chain and replaces it.
The scheduler also convicts a provider that hands over bytes other than its own commitment
(``"fault"`` events): those faults are reported here the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import pickle
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import GolemError
from ..trust import allow_class, compare, digest
from ..worker.runner import ElementResults, UnitResult

logger = logging.getLogger(__name__)

REQUESTOR = "requestor"
"""The vote of the requestor's own machine (a referee that is never outvoted)."""

CELL_RESULTS = (UnitResult, ElementResults)
"""What the tasks of a ``%%golem`` cell return (the collect task returns plain data)."""

LOCAL_PROCESSES = 2
"""Processes that re-run tasks on the requestor's machine (the referee of a market with two providers)."""


@dataclass(frozen=True)
class Fault:
    """A provider outvoted on one task of one graph."""

    provider: str
    graph_id: str | None
    key: str
    evidence: bytes
    """sha256 over the task's key and the digest of every result compared: what ``reportFault`` records."""
    detail: str


@dataclass
class VerificationStats:
    """What verification did in a session: the receipts and the benchmark read it."""

    checked: int = 0
    mismatches: int = 0
    referees: int = 0
    local_runs: int = 0
    faults: list[Fault] = field(default_factory=list)


class _Gone(Exception):
    """The check ended under us: the worker whose result was held left (Dask runs the task again)."""


class _Failed:
    """A re-run that raised instead of returning (it disagrees with any value)."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<failed: {self.error}>"


class _Refused(_Failed):
    """A result the restricted decoder refused (a type it does not rebuild): it matches no value."""


def _first_error(votes: dict[str, Any]) -> str:
    return next((v.error for v in votes.values() if isinstance(v, _Failed)), "")


class Verification:
    """Judges the checks the scheduler announces, one task at a time, until closed."""

    def __init__(
        self,
        scheduler: Any,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        on_fault: Callable[[Fault], Awaitable[None]] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.rtol = rtol
        self.atol = atol
        self.on_fault = on_fault
        self.stats = VerificationStats()
        self.outvoted: set[str] = set()
        """Providers voted down in this session: a later disagreement with one of them needs no referee."""
        self._local = asyncio.Semaphore(LOCAL_PROCESSES)
        self._pool: ProcessPoolExecutor | None = None
        self._votes: dict[str, dict[str, Any]] = {}
        """Per open check: provider -> the result it gave (the held one first)."""
        self._mismatched: set[str] = set()
        self._loop_task: asyncio.Task | None = None
        self._judging: set[asyncio.Task] = set()
        self._reporting: set[asyncio.Task] = set()
        """``on_fault`` calls under way: each sends a ``reportFault`` transaction and waits for it."""

    async def start(self, fraction: float) -> None:
        # A %%golem cell's tasks hand these on to each other: data classes of this package (no
        # __setstate__, no methods that run on load), rebuilt from their fields to be compared.
        for cls in CELL_RESULTS:
            allow_class(cls)
        await self.scheduler.golem_verify_configure(fraction=fraction)
        self._loop_task = asyncio.create_task(self._loop())

    async def configure(self, fraction: float) -> None:
        await self.scheduler.golem_verify_configure(fraction=fraction)

    async def reported(self) -> None:
        """Return once every fault found so far is reported (``on_fault`` returned, its ``reportFault``
        mined): a held result is released as soon as its verdict is in, so a gather can return first."""
        while self._reporting:
            await asyncio.wait(set(self._reporting))

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._judging:
            await asyncio.gather(*self._judging, return_exceptions=True)
        await self.reported()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _loop(self) -> None:
        while True:
            try:
                events = await self.scheduler.golem_verify_events(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 (the scheduler is gone: nothing is held any more)
                logger.debug("Verification stops: %s", error)
                return
            for event in events:
                if "agreed" in event:  # the re-runs committed to the same bytes: released already
                    self.stats.checked += 1
                    continue
                if "fault" in event:
                    self._report(event["fault"])
                    continue
                task = asyncio.create_task(self._judge(event))
                self._judging.add(task)
                task.add_done_callback(self._judging.discard)

    async def _judge(self, event: dict[str, Any]) -> None:
        check = event["check"]
        try:
            verdict = await self._verdict(event)
        except asyncio.CancelledError:
            raise
        except _Gone:
            self._votes.pop(check, None)  # its worker left: Dask computes the task again, and it is checked again
            return
        except Exception as error:  # noqa: BLE001 (a check that cannot be judged is released or failed, and said)
            disputed = check in self._mismatched
            self._votes.pop(check, None)
            self._mismatched.discard(check)
            if disputed:
                # Results disagreed and nothing could decide which is right: neither may reach the notebook.
                message = (
                    f"Providers returned different results for task {event['key']!r}, and no referee could decide "
                    f"which is right ({error}); the task failed rather than use either."
                )
                logger.warning("%s", message)
                await self.scheduler.golem_verify_decide(check_id=check, release=False, faulty=[], fail=message)
                return
            logger.warning("Could not check task %r (%s); its result is used unchecked.", event["key"], error)
            await self.scheduler.golem_verify_decide(check_id=check, release=True, faulty=[])
            return
        if verdict is None:
            return  # a referee is running: the check comes back when it is done
        release, faulty = verdict
        self.outvoted.update(faulty)
        votes = self._votes.pop(check, {})
        mismatch = check in self._mismatched
        self._mismatched.discard(check)
        faults = _faults(event, faulty, votes)
        # Counted before the verdict reaches Dask: a cell whose graph completes once the held result is
        # released must already see that a provider was voted down in it (and run it again).
        self.stats.faults += faults
        await self.scheduler.golem_verify_decide(check_id=check, release=release, faulty=faulty, mismatch=mismatch)
        for fault in faults:
            logger.warning(
                "Provider %s returned a wrong result for task %s: %s", fault.provider, fault.key, fault.detail
            )
            self._announce(fault)

    def _report(self, caught: dict[str, Any]) -> None:
        """The scheduler caught a provider handing over bytes other than it committed to (it has
        convicted it already): count the fault and report it."""
        provider, key = str(caught["provider"]), str(caught["key"])
        shown = (str(part).encode() + b"\0" for part in (provider, caught.get("committed"), caught.get("served")))
        fault = Fault(
            provider,
            caught.get("graph_id"),
            key,
            _evidence(key, shown),
            "handed over a result other than the one its own report committed to",
        )
        self.outvoted.add(provider)
        self.stats.faults.append(fault)
        logger.warning("Provider %s handed over a result for task %s: %s", provider, key, fault.detail)
        self._announce(fault)

    def _announce(self, fault: Fault) -> None:
        """Hand ``fault`` to ``on_fault`` in a task of its own: the verdict does not wait for the chain."""
        if self.on_fault is None:
            return
        task = asyncio.create_task(self.on_fault(fault))
        self._reporting.add(task)
        task.add_done_callback(functools.partial(self._reported, fault))

    def _reported(self, fault: Fault, task: asyncio.Task) -> None:
        self._reporting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Reporting provider %s failed: %r", fault.provider, task.exception())

    async def _verdict(self, event: dict[str, Any]) -> tuple[bool, list[str]] | None:
        """(release the held result?, providers outvoted), or None while a referee runs."""
        check, key = event["check"], event["key"]
        votes = self._votes.setdefault(check, {})
        new: dict[str, Any] = {}  # provider -> the key of its result, or its failure
        if event["provider"] not in votes:
            self.stats.checked += 1
            new[event["provider"]] = key  # the held result: first in the votes, it is what is released
        for twin, rerun in event["reruns"].items():
            provider = rerun.get("provider") or twin
            if provider not in votes and provider not in new:
                failed = rerun["state"] == "erred"
                new[provider] = _Failed(rerun.get("error", "the re-run failed")) if failed else twin
        fetch = [k for k in new.values() if not isinstance(k, _Failed)]
        fetched = dict(zip(map(str, fetch), await asyncio.gather(*(self._fetch(check, k) for k in fetch)), strict=True))
        for provider, wanted in new.items():
            votes[provider] = wanted if isinstance(wanted, _Failed) else fetched[str(wanted)]
        if all(isinstance(v, _Refused) for v in votes.values()) and len(votes) > 1:
            # Every provider returned a type the decoder does not rebuild: nothing here can compare them.
            raise RuntimeError(f"its results are of a type this process does not decode ({_first_error(votes)})")
        if len(votes) == 1:  # no other provider could re-run it
            await self._run_locally(check, votes)
        first, *others = votes.values()
        if check not in self._mismatched and not all(self._same(first, other) for other in others):
            self._mismatched.add(check)
            self.stats.mismatches += 1
        decided = self._count(votes)
        if decided is not None:
            return decided
        # Two results that disagree, and no referee yet.
        self.stats.referees += 1
        started = await self.scheduler.golem_verify_rerun(check_id=check, exclude=list(votes))
        if started.get("started"):
            return None
        await self._run_locally(check, votes)
        return self._count(votes)

    def _count(self, votes: dict[str, Any]) -> tuple[bool, list[str]] | None:
        """The verdict the votes give, or None if two disagree with no third to decide."""
        providers = list(votes)
        original = providers[0]
        if REQUESTOR in votes and isinstance(votes[REQUESTOR], _Failed):
            # This machine could not run the task: no evidence against anyone.
            raise RuntimeError(votes[REQUESTOR].error)
        if REQUESTOR in votes:
            truth = votes[REQUESTOR]
            faulty = [p for p in providers if p != REQUESTOR and not self._same(truth, votes[p])]
        else:
            groups: list[list[str]] = []
            for provider in providers:
                for group in groups:
                    if self._same(votes[group[0]], votes[provider]):
                        group.append(provider)
                        break
                else:
                    groups.append([provider])
            if len(groups) == 1:
                return True, []
            majority = max(groups, key=len)
            if len(majority) < 2:
                honest = [g for g in groups if not set(g) & self.outvoted]
                if len(honest) != 1:
                    return None
                majority = honest[0]  # the others include a provider caught lying already
            faulty = [p for p in providers if p not in majority]
        return original not in faulty, faulty

    def _same(self, a: Any, b: Any) -> bool:
        if isinstance(a, _Failed) or isinstance(b, _Failed):
            return False
        return compare(_comparable(a), _comparable(b), rtol=self.rtol, atol=self.atol) is None

    async def _fetch(self, check: str, key: Any) -> Any:
        """A result, fetched through the scheduler and decoded here (with the restricted decoder)."""
        try:
            reply = await self.scheduler.golem_verify_fetch(check_id=check, key=key)
        except GolemError as error:  # the restricted decoder refused it: a vote that matches nothing
            return _Refused(str(error))
        if reply.get("status") == "gone":
            raise _Gone
        if reply.get("status") != "OK":
            return _Failed(reply.get("error") or "the result is gone")
        return reply["data"][key]

    async def _run_locally(self, check: str, votes: dict[str, Any]) -> None:
        """Run the task on the requestor's machine: its spec (from the scheduler, which got it from this
        process) on its inputs (decoded with the restricted decoder), in a child process; its result is
        the requestor's vote. Skipped when, by the time it is this check's turn, a provider caught
        lying meanwhile settles the votes."""
        async with self._local:
            if len(votes) > 1 and self._count(votes) is not None:
                return
            votes[REQUESTOR] = await self._run_locally_now(check)

    async def _run_locally_now(self, check: str) -> Any:
        self.stats.local_runs += 1
        spec_bytes = await self.scheduler.golem_verify_spec(check_id=check)
        if spec_bytes is None:
            raise _Gone
        spec = pickle.loads(spec_bytes)  # trusted: the requestor's own graph, from its own scheduler
        dependencies = list(spec.dependencies)
        inputs: dict[Any, Any] = {}
        if dependencies:  # fetched as for a re-run on another provider: not from the provider checked
            reply = await self.scheduler.golem_verify_inputs(check_id=check)
            if reply.get("status") != "OK":
                why = reply.get("error") or reply.get("status")
                raise RuntimeError(f"the task's inputs could not be fetched ({why})")
            inputs = reply["data"]
        import cloudpickle

        main = sys.modules.get("__main__")
        if main is not None and not hasattr(main, "__spec__"):
            main.__spec__ = None  # IPython's user module has none, and spawning a process reads it
        if self._pool is None:
            # Processes of their own (spawned, not forked from the kernel), kept for the session: a
            # task's own code never runs in the kernel, and each re-run costs no interpreter start.
            self._pool = ProcessPoolExecutor(
                max_workers=LOCAL_PROCESSES, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        ok, payload = await loop.run_in_executor(self._pool, _run_spec, spec_bytes, cloudpickle.dumps(inputs))
        if not ok:
            return _Failed(f"the task failed on the requestor's machine: {payload}")
        return pickle.loads(payload)  # trusted: our own process ran our own task


def _faults(event: dict[str, Any], faulty: list[str], votes: dict[str, Any]) -> list[Fault]:
    """The faults of a check's verdict, each with the evidence: sha256 over the key and every vote's digest."""
    key = str(event["key"])
    evidence = _evidence(key, (provider.encode() + _digest(votes[provider]) for provider in sorted(votes)))
    return [
        Fault(provider, event.get("graph_id"), key, evidence, "outvoted by the re-runs of its task")
        for provider in faulty
    ]


def _evidence(key: str, parts: Iterable[bytes]) -> bytes:
    """``reportFault``'s evidence: sha256 over the task's key and the parts that show the fault."""
    evidence = hashlib.sha256(key.encode())
    for part in parts:
        evidence.update(part)
    return evidence.digest()


def _comparable(value: Any) -> Any:
    """A cell task's result as its fields (so floats in it compare with tolerance, not ``==``)."""
    if type(value) in CELL_RESULTS:
        return {f.name: _comparable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _digest(value: Any) -> bytes:
    if isinstance(value, _Failed):
        return hashlib.sha256(value.error.encode()).digest()
    try:
        return digest(value)
    except Exception:  # noqa: BLE001 (a value digest cannot walk still counts as evidence by its repr)
        return hashlib.sha256(repr(value).encode()).digest()


def _run_spec(spec_bytes: bytes, inputs: bytes) -> tuple[bool, bytes | str]:
    """In a process of the local referee pool: ``spec(inputs)``, as (True, its pickle) or (False, the error)."""
    import cloudpickle

    stdout, stderr = sys.stdout, sys.stderr  # a cell's task replaces them to capture what it prints
    try:
        spec = pickle.loads(spec_bytes)  # trusted: see Verification._run_locally
        result = spec(pickle.loads(inputs))
        return True, cloudpickle.dumps(result)
    except BaseException as error:  # noqa: BLE001 (the task's own failure is this vote)
        return False, f"{type(error).__name__}: {error}"[:500]
    finally:
        sys.stdout, sys.stderr = stdout, stderr
