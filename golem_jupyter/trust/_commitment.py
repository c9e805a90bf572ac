"""A result's commitment: a digest of the bytes a worker hands over for it.

DESIGN.md section 6, "Results". A provider's worker could hand the requestor's scheduler one
value when the scheduler fetches a result to check it, and another when the client gathers it
(or when a check's re-run needs it as an input): a check that judged the first would vouch for
the second. So the worker commits first. When a task finishes, the provider's meter
(:mod:`golem_jupyter.worker.meter`) puts :func:`commit` of the result into the task's report,
before anyone asks for the result and before the provider could know whether the task is
checked. Wherever the requestor's scheduler later receives the result's bytes, it digests what
arrived (:func:`digest_payload`, without decoding it) and compares: a provider that hands anyone
other bytes than it committed to is caught by that comparison, every time, not by sampling.

What is digested is the result as a worker's ``get_data`` writes it to the scheduler:
distributed's ``serialize`` (the "dask" family, then "pickle", with the pickle protocol the
scheduler's connections use), its header without the transport's own fields (frame splitting,
frame counts, compression, whether a buffer was writeable), and each frame's bytes as they were
before splitting. Those fields must still describe the frames exactly as distributed lays them
out, and say "uncompressed" (:func:`_as_serialized`). The header is part of it: it says how the
bytes are read (a dtype, a shape), so bytes alone would let a provider change the value they make.

A value the worker mutates after it finished (a later task that changes its input in place)
serializes differently and no longer matches: Dask's own rule, that tasks do not mutate their
inputs, is what keeps an honest provider's commitment true.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import msgpack
from distributed.protocol.serialize import (
    Serialize,
    Serialized,
    msgpack_decode_default,
    msgpack_encode_default,
    serialize,
)
from distributed.protocol.utils import msgpack_opts

COMMITMENT = "golem-digest"
"""Task metadata key under which a provider's worker reports its commitment to the result."""

SERIALIZERS = ("dask", "pickle")
"""The families a worker's ``get_data`` serializes with (distributed's default)."""

PICKLE_PROTOCOL = 4
"""The pickle protocol on a connection to or from a Dask scheduler: distributed's ``Scheduler``
sets it on every connection it makes or accepts (``handshake_overrides``, "common
denominator"), so it is the protocol of every answer a worker sends the scheduler."""

TRANSPORT_FIELDS = frozenset({"compression", "split-num-sub-frames", "split-offsets", "num-sub-frames", "writeable"})
"""Header fields the transport sets or may change without changing the value."""

_DOMAIN = b"golem-result-commitment/1\0"
_FORM = re.compile(r"[0-9a-f]{64}")


def commit(value: Any) -> str | None:
    """The commitment to ``value`` (hex sha256), or None for a value distributed cannot serialize
    (no one can fetch it either)."""
    try:
        # Wrapped as get_data wraps it (distributed then serializes a collection item by item).
        header, frames = serialize(
            Serialize(value), serializers=SERIALIZERS, on_error="raise", context={"pickle-protocol": PICKLE_PROTOCOL}
        )
        # The header as the receiving side sees it: msgpack turns lists into tuples, and so on.
        packed = msgpack.dumps(header, default=msgpack_encode_default, use_bin_type=True)
        wire = msgpack.loads(packed, object_hook=msgpack_decode_default, use_list=False, **msgpack_opts)
    except Exception:  # noqa: BLE001 (unserializable: there are no bytes to commit to)
        return None
    return _digest(wire, [[frame] for frame in frames])


def digest_payload(payload: Any) -> str:
    """The digest of a result as the requestor's scheduler received it from a worker: equal to
    the worker's :func:`commit` if the worker handed over what it committed to.

    ``payload`` is what a ``get_data`` answer holds for the key, undecoded: ``Serialized``
    (header and frames, over a network comm) or ``Serialize`` (the value itself, over an
    in-process comm). Anything else, or bytes that cannot be read back into frames, digests to a
    string that is no commitment at all.
    """
    if isinstance(payload, Serialize):
        return commit(payload.data) or "no commitment: the value does not serialize"
    if not isinstance(payload, Serialized):
        return f"no commitment: a {type(payload).__name__} instead of serialized bytes"
    try:
        header, frames = payload.header, list(payload.frames)
        originals = _as_serialized(header, frames)
        if originals is None:
            return "no commitment: frames laid out otherwise than distributed writes them"
        return _digest(header, originals)
    except Exception as error:  # noqa: BLE001 (a malformed payload is simply not what was committed to)
        return f"no commitment: {type(error).__name__}"


def _as_serialized(header: dict[str, Any], frames: list[Any]) -> list[list[Any]] | None:
    """The frames grouped back into the frames serialized, or None unless the header's transport
    fields describe them exactly as distributed lays them out.

    The digest leaves those fields out, but the receiving side reads the frames by them, so any
    freedom in them would let one digest stand for several values (offsets that pick a frame
    twice, a compression list shorter than the frames). And none may say "compressed": the
    requestor's scheduler negotiates no compression on its connections, so an honest answer never
    is, and a compressed frame would be decompressed here, with no bound, before anything else.
    """
    n = len(frames)
    compression = header.get("compression")
    if compression is not None and (len(compression) != n or any(c is not None for c in compression)):
        return None
    if header.get("num-sub-frames", n) != n:
        return None
    counts = tuple(header.get("split-num-sub-frames", (1,) * n))
    offsets = tuple(header.get("split-offsets", range(n)))
    expected, at = [], 0
    for count in counts:
        if not isinstance(count, int) or count < 1:
            return None
        expected.append(at)
        at += count
    if at != n or offsets != tuple(expected):
        return None
    return [frames[offset : offset + count] for offset, count in zip(offsets, counts, strict=True)]


def is_commitment(value: object) -> bool:
    """Whether ``value`` has the form of a commitment (what a report's metadata should hold)."""
    return isinstance(value, str) and _FORM.fullmatch(value) is not None


def _digest(header: dict[str, Any], frames: Iterable[list[Any]]) -> str:
    hasher = hashlib.sha256(_DOMAIN)
    canonical = msgpack.dumps(_canonical(header), use_bin_type=True)
    hasher.update(len(canonical).to_bytes(8, "big") + canonical)
    for parts in frames:
        views = [memoryview(part).cast("B") for part in parts]
        hasher.update(sum(view.nbytes for view in views).to_bytes(8, "big"))
        for view in views:
            hasher.update(view)
    return hasher.hexdigest()


def _canonical(value: Any) -> Any:
    """The header without transport fields, dicts as pairs sorted by key, sequences as lists."""
    if isinstance(value, dict):
        pairs = [[_canonical(k), _canonical(v)] for k, v in value.items() if k not in TRANSPORT_FIELDS]
        return {"dict": sorted(pairs, key=lambda pair: msgpack.dumps(pair[0], use_bin_type=True))}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value
