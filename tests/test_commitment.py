"""A worker's commitment to a result matches the bytes it hands over for it, and nothing else.

The requestor's scheduler never decodes a result: it digests the undecoded ``get_data`` answer
(:func:`digest_payload`) and compares it with what the worker's meter committed to in its report
(:func:`commit`). Both must agree for every value an honest worker hands over, over a real TCP
connection, with the transport compressing and splitting frames; and any change to what the
bytes decode to (the bytes, or the header that says how to read them) must change the digest.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import zlib
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Client, Scheduler, Worker
from distributed.comm.core import Comm
from distributed.comm.tcp import TCP
from distributed.protocol.serialize import Serialize, Serialized
from distributed.worker import get_data_from_worker

from golem_jupyter.trust import commit, digest_payload, is_commitment


class Point:
    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


VALUES: dict[str, Any] = {
    "int": 7,
    "str": "héllo",
    "list": list(range(100)),
    "tuple": (np.float32(1.5), None, 3j),
    "set": {"a", "b", "c"},
    "dict of arrays": {"a": np.ones(3), "b": [1, {2, 3}]},
    "array": np.arange(100_000, dtype="f8"),
    "strided array": np.arange(100_000).reshape(1000, 100)[:, ::3],
    "record array": np.zeros(4, dtype=[("x", "i4"), ("y", "f8")]),
    "large array": np.zeros(3_000_000),
    "compressible bytes": b"x" * 300_000,
    "instance": Point(1.0, 2.0),
}


async def _fetched(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Each value computed on a real worker over TCP, then fetched by the scheduler, over its own
    connections (its pickle protocol, undecoded); with the worker's commitment to it."""
    async with (
        Scheduler(port=0, dashboard_address=":0", protocol="tcp") as scheduler,
        Worker(scheduler.address, nthreads=1, dashboard=False) as worker,
        Client(scheduler.address, asynchronous=True) as client,
    ):
        futures = [client.submit(copy.deepcopy, value, key=key) for key, value in values.items()]
        await client.gather(futures)
        committed = {key: commit(worker.data[key]) for key in values}
        answer = await get_data_from_worker(scheduler.rpc, list(values), worker.address, who=scheduler.address)
    return answer["data"], committed


@pytest.mark.parametrize("transport", ["plain", "split"])
def test_what_a_worker_hands_over_matches_its_commitment(transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "split":  # shards as small as the transport may cut them: frames arrive in pieces
        monkeypatch.setattr(TCP, "max_shard_size", 64 * 1024)
    received, committed = asyncio.run(_fetched(VALUES))
    for key in VALUES:
        assert isinstance(received[key], Serialized), key
        assert is_commitment(committed[key]), key
        assert digest_payload(received[key]) == committed[key], key
    if transport == "split":  # the transport did cut frames: the digest saw through it
        assert any(len(p.frames) > len(p.header.get("split-num-sub-frames") or ()) for p in received.values())


def test_a_compressed_answer_matches_no_commitment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The requestor's scheduler negotiates no compression, so an honest answer never is: one that
    says it is compressed is refused as it is, never decompressed (no zlib bomb gets inflated)."""
    monkeypatch.setattr(Comm, "same_host", property(lambda comm: False))  # as between two machines
    monkeypatch.setitem(dask.config.config["distributed"]["comm"], "compression", "zlib")
    received, _ = asyncio.run(_fetched({"compressible": b"x" * 300_000}))
    assert received["compressible"].header["compression"] == ("zlib",)
    assert not is_commitment(digest_payload(received["compressible"]))
    bomb = Serialized({"serializer": "pickle", "compression": ("zlib",)}, [zlib.compress(b"\0" * (64 << 20))])
    assert not is_commitment(digest_payload(bomb))


def test_a_header_that_lays_out_the_frames_otherwise_matches_no_commitment() -> None:
    """The receiving side reads frames by the transport's fields, which the digest leaves out:
    offsets that pick a frame twice (or a compression list that drops one) would make other
    values out of the committed bytes."""
    received, committed = asyncio.run(_fetched({"pair": [np.array([1.0]), np.array([2.0])]}))
    pair = received["pair"]
    assert digest_payload(pair) == committed["pair"] and len(pair.frames) == 2
    header = copy.deepcopy(pair.header)
    for field, value in {
        "split-offsets": (1, 1),
        "split-num-sub-frames": (2, 1),
        "compression": (None,),
        "num-sub-frames": 3,
    }.items():
        changed = {**header, field: value}
        assert not is_commitment(digest_payload(Serialized(changed, pair.frames))), field


def test_a_value_passed_in_process_digests_as_its_commitment() -> None:
    value = np.arange(10.0)
    assert digest_payload(Serialize(value)) == commit(value)


def test_any_change_to_what_the_bytes_decode_to_changes_the_digest() -> None:
    received, committed = asyncio.run(_fetched({"a": np.arange(8, dtype="i8")}))
    [payload] = received.values()
    assert digest_payload(payload) == committed["a"]

    other_bytes = Serialized(payload.header, [bytes(frame)[:-1] + b"\x01" for frame in payload.frames])
    assert digest_payload(other_bytes) != committed["a"]

    reread = copy.deepcopy(payload.header)  # the same bytes, read as floats: another value
    reread["sub-header"] = {**reread["sub-header"], "dtype": (0, "<f8")}
    assert digest_payload(Serialized(reread, payload.frames)) != committed["a"]

    transport_only = copy.deepcopy(payload.header)  # what the transport may change: the same value
    transport_only["sub-header"] = {**transport_only["sub-header"], "writeable": (False,)}
    transport_only["compression"] = (None,)
    assert digest_payload(Serialized(transport_only, payload.frames)) == committed["a"]


@pytest.mark.parametrize(
    "payload",
    [45, b"\x80\x05K-.", "0" * 64, None, Serialized({"compression": ("no-such-codec",)}, [b"x"])],
    ids=["int", "raw-pickle", "digest-shaped-string", "none", "unknown-codec"],
)
def test_what_is_not_serialized_bytes_matches_no_commitment(payload: Any) -> None:
    assert not is_commitment(digest_payload(payload))


def test_a_value_that_does_not_serialize_has_no_commitment() -> None:
    class Unpicklable:
        def __reduce__(self) -> Any:
            raise pickle.PicklingError("no")

    assert commit(Unpicklable()) is None
    assert not is_commitment(None) and not is_commitment("F" * 64) and is_commitment("f" * 64)
