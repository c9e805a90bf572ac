"""A provider's worker computes only on inputs that match their producers' commitments.

A task's inputs often live on another provider's worker, and Dask has the worker fetch them from
there directly. The provider that computed an input could hand the requestor's scheduler (and
so any check) the bytes it committed to and this worker doctored ones: this worker's result would
then be wrong, its check would vote this honest provider down, and it would be reported and paid
nothing for a lie it never told.

So the requestor's scheduler sends each task with the commitments of its inputs that a check
holds to one (the ``golem-inputs`` annotation, :data:`INPUT_COMMITMENTS`), and
:func:`check_transfers` makes the worker fetch those inputs undecoded, digest them
(:func:`~golem_jupyter.trust.digest_payload`) and compare before decoding a byte. A copy that does
not match is refused: the worker asks the scheduler for the copy it holds to the commitment
instead (``golem_committed_data``; the scheduler convicts the producer if it hands the scheduler
other bytes too). Comparing bytes needs the bytes the producer committed to: this worker's
connections ask for pickle protocol 4 and no compression, as the scheduler's do.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import distributed.worker
from distributed.protocol.compression import decompress
from distributed.protocol.serialize import Serialize, Serialized, merge_and_deserialize

from ._commitment import PICKLE_PROTOCOL, digest_payload, is_commitment

logger = logging.getLogger(__name__)

INPUT_COMMITMENTS = "golem-inputs"
"""The annotation of a task, in the message that sends it to a worker: input key -> commitment."""

COMMITTED_DATA = "golem_committed_data"
"""The scheduler's handler that hands a worker the copy of a result it holds to its commitment."""

TRANSFER_FORM = {"pickle-protocol": PICKLE_PROTOCOL, "compression": None}
"""How results travel to the requestor's scheduler, and so how their commitments are made."""

_consumers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_original_get_data = distributed.worker.get_data_from_worker


@dataclass
class TransferChecks:
    """What one worker's check of its inputs did: inputs compared with their commitments, and
    those refused (fetched from the requestor's scheduler instead)."""

    checked: int = 0
    refused: int = 0


_counts: weakref.WeakKeyDictionary[Any, TransferChecks] = weakref.WeakKeyDictionary()


def transfer_checks(worker: Any) -> TransferChecks:
    """The counts of ``worker``'s checks of its inputs (zeros for a worker that does not check)."""
    return _counts.get(worker, TransferChecks())


def check_transfers(worker: Any) -> None:
    """From now on ``worker`` checks what its peers hand it against the inputs' commitments."""
    handshake = worker.rpc.connection_args.setdefault("handshake_overrides", {})
    handshake.update(TRANSFER_FORM)
    _consumers[worker.address] = worker
    _counts.setdefault(worker, TransferChecks())
    distributed.worker.get_data_from_worker = _checked_get_data


def committed_inputs(worker: Any, keys: Collection[Any]) -> dict[Any, str]:
    """The commitments the scheduler sent with ``worker``'s tasks for those of ``keys`` that have one."""
    bound: dict[Any, str] = {}
    for key in keys:
        ts = worker.state.tasks.get(key)
        for dependent in ts.dependents if ts is not None else ():
            commitments = (dependent.annotations or {}).get(INPUT_COMMITMENTS)
            committed = commitments.get(key) if isinstance(commitments, dict) else None
            if is_commitment(committed):
                bound[key] = committed
                break
    return bound


async def _checked_get_data(
    rpc: Any,
    keys: Collection[Any],
    worker: str,
    *,
    who: str | None = None,
    serializers: list[str] | None = None,
    deserializers: list[str] | None = None,
) -> dict[str, Any]:
    """``distributed.worker.get_data_from_worker`` for a worker that checks its inputs."""
    consumer = _consumers.get(who) if who is not None else None
    bound = committed_inputs(consumer, keys) if consumer is not None else {}
    if not bound:
        return await _original_get_data(
            rpc, keys, worker, who=who, serializers=serializers, deserializers=deserializers
        )  # fmt: skip
    if deserializers is None:
        deserializers = rpc.deserializers
    response = await _original_get_data(
        _Undecoded(rpc), keys, worker, who=who, serializers=serializers, deserializers=deserializers
    )  # fmt: skip
    if response.get("status") != "OK":
        return response
    data = response.get("data", {})
    refused = [key for key, committed in bound.items() if key in data and digest_payload(data[key]) != committed]
    counts = _counts.setdefault(consumer, TransferChecks())
    counts.checked += len([key for key in bound if key in data])
    counts.refused += len(refused)
    decoded = {key: _decode(payload, deserializers) for key, payload in data.items() if key not in refused}
    if refused:
        logger.warning(
            "Worker %s handed over %d input(s) that do not match their commitments (%r...); asking the "
            "requestor's scheduler for the committed copies instead.", worker, len(refused), refused[0],
        )  # fmt: skip
        answer = await consumer.scheduler.golem_committed_data(keys=refused)
        if answer.get("status") != "OK":
            # Dask treats this like a peer that went away: it asks for the inputs again elsewhere.
            raise OSError(f"{worker} handed over inputs other than committed, and no committed copy was found")
        decoded.update(answer["data"])
    return {"status": "OK", "data": decoded}


class _Undecoded:
    """The worker's connection pool, lending connections that leave payloads as they came (the
    bytes as sent: digested before they are decoded) for distributed's own fetch."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.serializers = pool.serializers
        self.deserializers = pool.deserializers

    async def connect(self, address: str) -> Any:
        comm = await self.pool.connect(address)
        comm.deserialize = False
        return comm

    def reuse(self, address: str, comm: Any) -> None:
        comm.deserialize = self.pool.deserialize
        self.pool.reuse(address, comm)


def _decode(payload: Any, deserializers: list[str] | None) -> Any:
    if isinstance(payload, Serialize):  # an in-process comm hands over the value itself
        return payload.data
    if isinstance(payload, Serialized):
        header, frames = payload.header, payload.frames
        if "compression" in header:
            frames = decompress(header, frames)
        return merge_and_deserialize(header, frames, deserializers=deserializers)
    return payload
