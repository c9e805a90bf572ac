"""A check's re-run does not read its inputs from the provider it checks (DESIGN.md section 6,
"Results": "inputs the requestor sends; the second provider never reads the first one's output").

The attack: a provider computes an input ``D`` (unchecked), then a task ``T = sum(D)`` on it, and
lies about ``T``. Its worker holds the only copy of ``D``, so a re-run elsewhere would fetch ``D``
from it, and it serves its peers a ``D`` doctored to make the re-run agree with its lie (one item
+ 1), while the requestor, asking for ``D`` itself, gets the true one (the requestor's scheduler
names itself in its requests; on a market, its certificate says who it is as plainly). Were the re-run to read
``D`` from the liar, the check would pass and the lie reach the client, whatever the verify
fraction. The requestor therefore fetches a check's inputs itself and hands them to the re-run's
worker: the re-run computes the true ``T``, the two disagree, the requestor's own machine
referees (there is no third provider), and the liar is outvoted.

A liar that doctors ``D`` for everyone, the requestor included, has in effect lied about ``D``;
that lie is caught when ``D``'s own check draws it (tests/test_verify_catch_rate.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import dask
import dask.base
import distributed
import numpy as np
import pytest
from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin
from verifykit import verifying_cluster

from golem_jupyter import trust
from golem_jupyter.scheduler import verify
from golem_jupyter.scheduler.verify import ANNOTATION
from golem_jupyter.trust import COMMITMENT, commit
from golem_jupyter.trust._transfers import TransferChecks, transfer_checks

pytestmark = pytest.mark.timeout(300)


def numbers(n: int) -> list[int]:
    return list(range(n))


def total(values: list[int]) -> int:
    return sum(values)


class TwoFaced(WorkerPlugin):
    """A hostile worker's ``get_data``: each value asked for passes through :meth:`doctor` (which
    knows whether the requestor's scheduler is asking, as a provider knows from the peer's
    certificate) and the worker's memory is left as it was. With ``lies_about_totals``, every
    ``total`` it computes is also a lie (+ 1)."""

    name = "two-faced"
    lies_about_totals = True

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.doctored = 0
        get_data = worker.handlers["get_data"]

        async def two_faced_get_data(comm: Any, keys: Any = (), who: Any = None, **kwargs: Any) -> Any:
            true = {}
            for key in keys:
                if key in worker.data:
                    lie = self.doctor(key, worker.data[key], to_scheduler=who == worker.scheduler.address)
                    if lie is not None:
                        true[key], worker.data[key] = worker.data[key], lie
                        self.doctored += 1
            try:
                return await get_data(comm, keys=keys, who=who, **kwargs)
            finally:
                worker.data.update(true)

        worker.handlers["get_data"] = two_faced_get_data

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        """What to hand over instead of ``value``, or None for the truth."""
        return None

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if self.lies_about_totals and start == "executing" and finish == "memory" and str(key).startswith("total"):
            self.worker.data[key] = self.worker.data[key] + 1


class DoctorsInputsForPeers(TwoFaced):
    """Lies about every ``total`` and serves other workers a ``numbers`` list with its first item + 1,
    so that their ``total`` of it agrees with the lie; the scheduler gets the truth."""

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return None if to_scheduler or not str(key).startswith("numbers") else [value[0] + 1, *value[1:]]


def test_a_check_does_not_read_its_inputs_from_the_provider_it_checks() -> None:
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        plugin = DoctorsInputsForPeers()
        liar = cluster.worker("liar", plugins=[plugin])
        cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: 0.0}):
            values = client.submit(numbers, 10, workers=[liar.address], allow_other_workers=True, pure=False)
        with dask.annotate(**{ANNOTATION: 1.0}):
            result = client.submit(total, values, workers=[liar.address], allow_other_workers=True, pure=False)
        assert result.result(timeout=120) == sum(range(10))  # not the liar's 46
        assert [f.provider for f in cluster.faults] == ["liar"]
        assert plugin.doctored == 0, "the re-run's worker read an input from the provider it checked"


class DoctorsInputsOnceChecked(TwoFaced):
    """Lies about every ``total`` (+ 1); hands the requestor's scheduler each ``numbers`` list
    truthfully the first time it asks (that is the check of ``numbers`` itself) and doctored (first
    item + 1) ever after; anyone else gets the truth."""

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        self.asked: set[Any] = set()

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        if not to_scheduler or not str(key).startswith("numbers"):
            return None
        if key not in self.asked:
            self.asked.add(key)
            return None
        return [value[0] + 1, *value[1:]]


def test_an_input_already_checked_is_handed_on_as_it_was_judged() -> None:
    """The liar's ``numbers`` is checked (and passes: it is handed over truthfully the first time);
    ``total`` of it, a lie, is checked next, and the liar would hand the requestor a doctored
    ``numbers`` for the re-run's copy. Either the requestor hands on the ``numbers`` it judged
    without asking again, or it asks and the doctored copy does not match the liar's own
    commitment: either way the re-run never computes on a doctored input, and the liar is
    caught (outvoted on ``total``, or convicted on ``numbers``)."""
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        plugin = DoctorsInputsOnceChecked()
        liar = cluster.worker("liar", plugins=[plugin])
        cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: 1.0}):
            values = client.submit(numbers, 10, workers=[liar.address], allow_other_workers=True, pure=False)
            assert values.result(timeout=120) == list(range(10))  # checked, and true
            result = client.submit(total, values, workers=[liar.address], allow_other_workers=True, pure=False)
            assert result.result(timeout=120) == sum(range(10))  # not the liar's 46
        assert {f.provider for f in cluster.reported(1)} == {"liar"}
        if plugin.doctored:
            assert any("committed" in f.detail and f.key.startswith("numbers") for f in cluster.faults)


def noisy_total(values: list[int]) -> float:
    """``sum(values)``, with the last bits of the float depending on the worker, as honest noise
    does (another summation order): two honest results agree within the tolerances, but not
    byte for byte, so the kernel fetches and compares them instead of trusting equal commitments."""
    from distributed import get_worker

    try:
        here = get_worker().name
    except ValueError:  # the requestor's own machine, refereeing
        here = "requestor"
    return float(sum(values)) + (1e-13 if here == "honest" else 0.0)


class LiesAfterTheFirstAnswer(TwoFaced):
    """Computes honestly and commits to the truth, answers the first request for each
    ``noisy_total`` truthfully and every later one with the truth + 1. The requestor's scheduler
    asks twice for a checked result: to judge it, then for the client; a provider can tell the two
    apart (by order, by timing), whatever the requestor names itself, and lie to the second only."""

    lies_about_totals = False

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        self.asked: set[Any] = set()

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        if not str(key).startswith("noisy_total"):
            return None
        if key not in self.asked:
            self.asked.add(key)
            return None
        return value + 1


@pytest.mark.parametrize("kept", [True, False], ids=["judged-bytes-kept", "judged-bytes-not-kept"])
def test_a_result_handed_to_the_client_is_the_one_that_was_judged(kept: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check judges the truth; a later copy of the result would be a lie. Where the scheduler
    kept the bytes it judged, those are what the client gets (the provider is not asked again).
    Where it did not (too large to keep, say), the client's copy does not match the commitment
    in the worker's report: the provider is convicted (reported, its workers removed), the result
    computed again by the honest provider, and the client gets the truth."""
    if not kept:
        monkeypatch.setattr(verify, "JUDGED_BYTES", 0)
    with verifying_cluster(1.0) as cluster:
        client = cluster.client
        plugin = LiesAfterTheFirstAnswer()
        two_faced = cluster.worker("two-faced", plugins=[plugin])
        cluster.worker("honest")
        result = client.submit(noisy_total, list(range(10)), workers=[two_faced.address], allow_other_workers=True)
        assert result.result(timeout=120) == pytest.approx(sum(range(10)))
        assert cluster.verification.stats.checked >= 1 and plugin.asked, "no check judged the result"
        if kept:
            cluster.settled()
            assert cluster.faults == [] and plugin.doctored == 0
        else:
            assert [f.provider for f in cluster.reported(1)] == ["two-faced"]
            assert "committed" in cluster.faults[0].detail
            assert plugin.doctored == 1, "the liar never got to lie: the test proves nothing"


class LiesToEveryoneButCommitsToTheTruth(TwoFaced):
    """Commits to the true ``total`` and hands everyone the truth + 1."""

    lies_about_totals = False

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return value + 1 if str(key).startswith("total") else None


@pytest.mark.parametrize("fraction", [1e-12, 1.0])
def test_a_result_that_does_not_match_its_commitment_never_reaches_the_client(fraction: float) -> None:
    """Whether or not the task is drawn for a check (a fraction so small it never is, or 1), the
    bytes the client would get do not match the worker's commitment: caught every time, not by
    chance."""
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        two_faced = cluster.worker("two-faced", plugins=[LiesToEveryoneButCommitsToTheTruth()])
        cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: fraction}):
            results = client.map(
                total, [[i, i] for i in range(20)], workers=[two_faced.address], allow_other_workers=True
            )
        assert client.gather(results) == [2 * i for i in range(20)]
        assert [f.provider for f in cluster.reported(1)] == ["two-faced"]  # once, however many it lied about


def test_a_verified_task_reported_without_a_commitment_is_always_checked() -> None:
    """A worker that reports no commitment leaves nothing to hold its later answers to: each such
    report of a verified task is checked, however small the fraction, and the bytes judged
    become its commitment. Unverified tasks (fraction 0) are not held."""
    with verifying_cluster(0.0) as cluster:
        client = cluster.client
        silent = cluster.worker("silent", commits=False)
        cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: 1e-12}):
            checked = client.map(total, [[i, i] for i in range(5)], workers=[silent.address], pure=False)
        assert client.gather(checked) == [2 * i for i in range(5)]
        with dask.annotate(**{ANNOTATION: 0.0}):
            assert client.submit(total, [1, 2], workers=[silent.address], pure=False).result() == 3
        cluster.settled()
        assert cluster.verifier.counts["held"] == 5
        assert cluster.faults == []


class ReportsTwice(TwoFaced):
    """Hands everyone ``total`` + 1, commits to the truth in its report of each ``total``, and
    right after it sends a second report of the same run committing to the lie: were the second
    report let through while the first is held, Dask would take it (and its commitment), the
    client's copy would match that, and the check of the first would vouch for it."""

    lies_about_totals = False

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        send = worker.batched_stream.send

        def send_twice(*messages: Any) -> None:
            send(*messages)
            for message in messages:
                if message.get("op") == "task-finished" and str(message.get("key")).startswith("total"):
                    lie = worker.data[message["key"]] + 1
                    send({**message, "metadata": {**message["metadata"], COMMITMENT: commit(lie)}})

        worker.batched_stream.send = send_twice

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return value + 1 if str(key).startswith("total") else None


def _the_liar_is_caught_and_the_truth_arrives(liar_plugin: TwoFaced) -> None:
    """Every result checked; ``total`` submitted to a liar running ``liar_plugin`` beside an honest
    provider: the client gets the true total, and the liar is reported."""
    with verifying_cluster(1.0) as cluster:
        client = cluster.client
        liar = cluster.worker("liar", plugins=[liar_plugin])
        cluster.worker("honest")
        result = client.submit(total, list(range(10)), workers=[liar.address], allow_other_workers=True)
        assert result.result(timeout=120) == sum(range(10))
        assert [f.provider for f in cluster.reported(1)] == ["liar"]


def test_a_second_report_of_a_held_task_is_not_believed() -> None:
    _the_liar_is_caught_and_the_truth_arrives(ReportsTwice())


class StallsItsCheck(TwoFaced):
    """Lies about every ``total`` (+ 1, and commits to the lie) and never answers a request for
    one: a check that waited for it would lapse, and the lie be used unchecked."""

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        get_data = worker.handlers["get_data"]

        async def stalling_get_data(comm: Any, keys: Any = (), **kwargs: Any) -> Any:
            if any(str(key).startswith("total") for key in keys):
                await asyncio.sleep(3600)
            return await get_data(comm, keys=keys, **kwargs)

        worker.handlers["get_data"] = stalling_get_data


def test_a_provider_that_stalls_its_check_is_outvoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "FETCH_TIMEOUT", 1.0)
    _the_liar_is_caught_and_the_truth_arrives(StallsItsCheck())


class LiesToTheClientOnly(TwoFaced):
    """Computes and commits to the truth, and hands ``total`` + 1 to anyone but the requestor's
    scheduler: to a client that asks the worker itself (``gather(direct=True)``), past the
    scheduler's check of the bytes against the commitment."""

    lies_about_totals = False

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return value + 1 if not to_scheduler and str(key).startswith("total") else None


@pytest.mark.parametrize("how", ["gather-direct", "client-direct-to-workers"])
def test_a_client_asking_the_workers_directly_still_gets_checked_results(how: str) -> None:
    """The requestor's clients gather through its scheduler however they ask: the scheduler is
    where every copy of a verified result is held to its commitment."""
    with verifying_cluster(0.0) as cluster, trust.gathers_through_the_scheduler():
        plugin = LiesToTheClientOnly()
        two_faced = cluster.worker("two-faced", plugins=[plugin])
        with dask.annotate(**{ANNOTATION: 1e-12}):
            results = cluster.client.map(total, [[i, i] for i in range(5)], workers=[two_faced.address])
        distributed.wait(results)
        if how == "gather-direct":
            values = cluster.client.gather(results, direct=True)
        else:
            with Client(cluster.scheduler.address, direct_to_workers=True) as direct:
                with dask.annotate(**{ANNOTATION: 1e-12}):
                    again = direct.map(total, [[i, i] for i in range(5)], workers=[two_faced.address], pure=False)
                values = direct.gather(again)
        assert values == [2 * i for i in range(5)]
        assert plugin.doctored == 0, "a worker handed a result to the client past the scheduler"


class FramesItsPeers(TwoFaced):
    """Computes everything honestly and commits to it; hands other workers a ``numbers`` list with
    its first item + 1, and the requestor's scheduler the truth. An honest provider's worker that
    computed on the doctored copy would return a wrong ``total``, and a check of that total would
    vote the honest provider down."""

    lies_about_totals = False

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return None if to_scheduler or not str(key).startswith("numbers") else [value[0] + 1, *value[1:]]


@pytest.mark.parametrize("protocol", ["inproc://", "tcp://"])
def test_a_provider_cannot_frame_another_by_doctoring_what_it_hands_it(protocol: str) -> None:
    """An honest worker checks each input it fetches from a peer against the producer's
    commitment before it computes on it; a copy that does not match is refused and the scheduler's
    checked copy used instead. The honest provider's result is right, and its check passes."""
    with verifying_cluster(0.0, protocol) as cluster:
        client = cluster.client
        plugin = FramesItsPeers()
        liar = cluster.worker("liar", plugins=[plugin])
        honest = cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: 1e-12}):  # held to its commitment, not drawn for a check
            values = client.submit(numbers, 10, workers=[liar.address], pure=False)
        with dask.annotate(**{ANNOTATION: 1.0}):
            result = client.submit(total, values, workers=[honest.address], pure=False)
        assert result.result(timeout=120) == sum(range(10))
        cluster.settled()
        assert plugin.doctored >= 1, "the liar never handed the honest worker a doctored copy: the test proves nothing"
        assert cluster.faults == [], "an honest provider was voted down for an input another provider doctored"
        assert transfer_checks(honest).refused >= 1
        assert cluster.verification.stats.checked >= 1


VALUES = {
    "ints": list(range(50)),
    "floats": [0.1 * i for i in range(50)],
    "text": "naïve " * 100,
    "bytes": bytes(range(256)) * 4000,
    "nested": {"a": [1, 2.5, None], "b": ("x", b"y"), "c": {"d": frozenset({1, 2})}},
    "strings-set": {f"item-{i}" for i in range(100)},
    "array": np.arange(100_000, dtype="float64").reshape(1000, 100),
    "array-in-list": [np.ones(50_000), np.zeros(3, dtype="int8")],
    "big-pickled": [bytes(2_000_000)],
}


def produce(name: str) -> Any:
    return VALUES[name]


def describe(value: Any) -> str:
    return dask.base.tokenize(value)


def test_honest_peers_hand_each_other_what_they_committed_to() -> None:
    """Over TCP, every kind of value an honest worker hands a peer matches its commitment: none is
    refused (each refusal would cost a trip through the requestor's scheduler), every one arrives."""
    with verifying_cluster(0.0, "tcp://") as cluster:
        client = cluster.client
        producer, consumer = cluster.worker("producer"), cluster.worker("consumer")
        with dask.annotate(**{ANNOTATION: 1e-12}):
            made = {name: client.submit(produce, name, workers=[producer.address], pure=False) for name in VALUES}
        described = {name: client.submit(describe, f, workers=[consumer.address]) for name, f in made.items()}
        assert client.gather(described) == {name: dask.base.tokenize(v) for name, v in VALUES.items()}
        assert transfer_checks(consumer) == TransferChecks(checked=len(VALUES), refused=0)


class HandsEveryoneADoctoredInput(TwoFaced):
    """Commits to the true ``numbers`` and hands everyone, the requestor's scheduler included, the
    list with its first item + 1."""

    lies_about_totals = False

    def doctor(self, key: Any, value: Any, *, to_scheduler: bool) -> Any:
        return [value[0] + 1, *value[1:]] if str(key).startswith("numbers") else None


def test_an_input_no_holder_hands_over_as_committed_is_computed_again() -> None:
    """The honest worker refuses the doctored input, and so does the scheduler it asks instead: the
    producer is convicted for handing over other bytes than it committed to, the input is
    computed again by an honest provider, and the honest result is right."""
    with verifying_cluster(0.0, "tcp://") as cluster:
        client = cluster.client
        liar = cluster.worker("liar", plugins=[HandsEveryoneADoctoredInput()])
        honest = cluster.worker("honest")
        with dask.annotate(**{ANNOTATION: 1e-12}):
            values = client.submit(numbers, 10, workers=[liar.address], allow_other_workers=True, pure=False)
            result = client.submit(total, values, workers=[honest.address], pure=False)
        assert result.result(timeout=120) == sum(range(10))
        [fault] = cluster.reported(1)
        assert fault.provider == "liar" and "committed" in fault.detail
        assert transfer_checks(honest).refused >= 1
