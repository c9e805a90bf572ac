"""The restricted decoder (DESIGN.md section 5) and its wiring into distributed.

Unit tests of ``restricted_loads`` first: what is rebuilt keeps its exact type and value,
what is refused raises UnsafePayload naming the type and never runs (hostile pickles would
create a marker file). Then the wiring, without processes. Last, a real Dask scheduler and
worker run as subprocesses: the worker pickles hostile objects exactly as a provider's
worker would, and the client in this process must refuse them.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import datetime
import decimal
import fractions
import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import traceback
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dask.array as da
import distributed
import hostile_payloads
import numpy as np
import pytest
import tblib
import tblib.pickling_support
from hostile_payloads import Hostile, HostileEval, HostileGetattr, HostilePopen, Plain
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golem_jupyter import trust
from golem_jupyter.errors import ConfigurationError, GolemError
from golem_jupyter.trust import (
    RemoteTaskError,
    UnsafePayload,
    allow_class,
    allow_namespace,
    decode_exception,
    disallow_class,
    restricted_loads,
)

TESTS = Path(__file__).resolve().parent
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
UTC = datetime.UTC


def assert_same(expected: Any, actual: Any) -> None:
    """Equal value *and* exact type, all the way down."""
    assert type(actual) is type(expected), (expected, actual)
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert actual.flags.f_contiguous == expected.flags.f_contiguous
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, (float, complex)):
        assert repr(actual) == repr(expected)  # tells -0.0 from 0.0, and nan equals nan
    elif isinstance(expected, (list, tuple, collections.deque)):
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual, strict=True):
            assert_same(e, a)
        if isinstance(expected, collections.deque):
            assert actual.maxlen == expected.maxlen
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(expected[key], actual[key])
        if isinstance(expected, collections.defaultdict):
            assert actual.default_factory is expected.default_factory
    elif isinstance(expected, types.SimpleNamespace):
        assert_same(vars(expected), vars(actual))
    elif isinstance(expected, BaseException):
        assert_same(expected.args, actual.args)
    else:
        assert actual == expected


def roundtrip(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> Any:
    return restricted_loads(pickle.dumps(value, protocol=protocol))


# --------------------------------------------------------------------------------------------
# Allowed values.

ALLOWED = {
    "none": None,
    "bools": (True, False),
    "int": -7,
    "big-int": 2**300 + 1,
    "negative-big-int": -(3**200),
    "float": 1.5,
    "negative-zero": -0.0,
    "nan-inf": (math.nan, math.inf, -math.inf),
    "complex": 1 - 2j,
    "str": "naïve ☃",
    "bytes": b"\x00\xffbytes",
    "empty-bytes": b"",
    "bytearray": bytearray(b"\x00mutable"),
    "tuple": (1, "a", (2.0,)),
    "list": [1, [2, [3]]],
    "dict": {"a": 1, 2: "b", (3, 4): [5]},
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({1, 2}),
    "slice": slice(1, 10, 2),
    "range": range(0, 100, 7),
    "simple-namespace": types.SimpleNamespace(a=1, b=[2]),
    "fraction": fractions.Fraction(-22, 7),
    "decimal": decimal.Decimal("-3.14159265358979323846264338327950288"),
    "date": datetime.date(2024, 2, 29),
    "time": datetime.time(23, 59, 58, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=-3), "X")),
    "datetime": datetime.datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    "naive-datetime": datetime.datetime(1999, 12, 31, 23, 59, 59),
    "timedelta": datetime.timedelta(days=-1, seconds=5, microseconds=7),
    "timezone": datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST"),
    "ordered-dict": collections.OrderedDict([("b", 1), ("a", 2)]),
    "defaultdict-list": collections.defaultdict(list, {"k": [1]}),
    "defaultdict-none": collections.defaultdict(None, {"k": 1}),
    "deque": collections.deque([1, 2, 3], maxlen=5),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"rows": [(1, {2, 3}, frozenset({"x"})), [b"y", None]], "when": datetime.date(2020, 1, 1)},
    "float-array": np.linspace(0, 1, 7),
    "int32-array": np.arange(12, dtype=np.int32).reshape(3, 4),
    "fortran-array": np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)),
    "bool-array": np.array([True, False]),
    "complex-array": np.array([1 + 2j, -1j], dtype=np.complex64),
    "unicode-array": np.array(["ab", "cde"]),
    "bytes-array": np.array([b"ab", b"c"], dtype="S3"),
    "datetime-array": np.array(["2024-01-01", "2024-02-29"], dtype="datetime64[D]"),
    "structured-array": np.zeros(3, dtype=[("x", "<f8"), ("y", "<i4", (2,))]),
    "zero-d-array": np.array(3.5),
    "empty-array": np.zeros((0, 3)),
    "big-endian-array": np.arange(4, dtype=">i8"),
    "float32-scalar": np.float32(1.25),
    "int64-scalar": np.int64(-5),
    "bool-scalar": np.bool_(True),
    "str-scalar": np.str_("abc"),
    "datetime64-scalar": np.datetime64("2024-02-29T12:00"),
    "dtype": np.dtype([("a", "<f4"), ("b", "S2")]),
    "builtin-exception": KeyError("missing"),
    "golem-error": ConfigurationError("bad setting"),
    "remote-task-error": RemoteTaskError("x.Error", "message", "traceback"),
    "unsafe-payload": UnsafePayload("x.y"),
    "ellipsis": Ellipsis,
    "none-type": type(None),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ALLOWED)
def test_allowed_values_keep_exact_type_and_value(name: str, protocol: int) -> None:
    value = ALLOWED[name]
    data = pickle.dumps(value, protocol=protocol)
    rebuilt = restricted_loads(data)
    assert_same(pickle.loads(data), rebuilt)  # exactly what plain pickle gives
    if not (name == "big-endian-array" and protocol < 5):  # NumPy's own pickles < 5 make it native-endian
        assert_same(value, rebuilt)


def test_noncontiguous_array_is_rebuilt() -> None:
    base = np.arange(20.0).reshape(4, 5)
    assert_same(np.ascontiguousarray(base[::2, 1::2]), roundtrip(base[::2, 1::2]))


@pytest.mark.parametrize(
    "array",
    [np.arange(1000, dtype=np.float64), np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.ones((3, 2), order="F")],
)
def test_protocol_5_out_of_band_buffers(array: np.ndarray) -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    assert buffers, "the array's data should travel out of band"
    rebuilt = restricted_loads(data, buffers=buffers)
    assert_same(array, rebuilt)


def test_numpy_1_pickles_are_read_without_importing_numpy_core() -> None:
    imported_before = "numpy.core.multiarray" in sys.modules
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    for protocol in (0, 2):  # text GLOBAL opcodes: the name can be edited in place
        data = pickle.dumps(array, protocol=protocol).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in data
        assert_same(array, restricted_loads(data))
    data = pickle.dumps(np.float32(2.5), protocol=2).replace(b"numpy._core", b"numpy.core")
    assert_same(np.float32(2.5), restricted_loads(data))
    assert ("numpy.core.multiarray" in sys.modules) == imported_before


def test_exception_classes_and_builtins_as_values() -> None:
    assert roundtrip(UserWarning) is UserWarning
    assert roundtrip(ValueError) is ValueError
    assert roundtrip(GolemError) is GolemError
    assert roundtrip(int) is int
    assert roundtrip(bytes) is bytes
    assert roundtrip(np.ndarray) is np.ndarray  # dask's "type-serialized" header


def raise_from_here(message: str) -> None:
    raise ValueError(message)


def pickled_with_traceback(exc_factory: Any) -> tuple[bytes, bytes]:
    """An exception and its traceback, pickled as distributed's error_message does (tblib)."""
    try:
        exc_factory()
    except BaseException as e:  # noqa: BLE001 (any exception is the point)
        tblib.pickling_support.install(e)
        return pickle.dumps(e), pickle.dumps(e.__traceback__)
    raise AssertionError("did not raise")


def test_exception_with_remote_traceback() -> None:
    data, tb_data = pickled_with_traceback(lambda: raise_from_here("boom"))
    exc = restricted_loads(data)
    assert type(exc) is ValueError and exc.args == ("boom",)
    text = "".join(traceback.format_tb(exc.__traceback__))
    assert "raise_from_here" in text and "test_decoder.py" in text
    tb = restricted_loads(tb_data)
    assert isinstance(tb, types.TracebackType)


def test_chained_exception_keeps_cause() -> None:
    def chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner

    data, _ = pickled_with_traceback(chained)
    exc = restricted_loads(data)
    assert type(exc) is RuntimeError and type(exc.__cause__) is KeyError


# --------------------------------------------------------------------------------------------
# Refused.


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("cls", "type_name"),
    [
        (Hostile, f"{os.system.__module__}.system"),
        (HostilePopen, "subprocess.Popen"),
        (HostileEval, "builtins.eval"),
        (HostileGetattr, "builtins.getattr"),
    ],
)
def test_hostile_reduce_is_refused_and_never_runs(cls: type, type_name: str, protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(cls(str(marker)), protocol=protocol)
    with pytest.raises(UnsafePayload) as refused:
        restricted_loads(data)
    assert refused.value.type_name == type_name
    assert type_name in str(refused.value)
    assert not marker.exists()


def test_hostile_object_nested_deep_in_allowed_values(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"ok": [1, 2, (3, {"deep": Hostile(str(marker))})]})
    with pytest.raises(UnsafePayload, match="system"):
        restricted_loads(data)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "array",
    [
        np.array([1, "a", None], dtype=object),
        np.zeros(2, dtype=[("x", "<f8"), ("o", "O")]),
        np.array([Plain(1)], dtype=object),
    ],
    ids=["object", "structured-with-object-field", "object-holding-class"],
)
def test_object_dtype_arrays_are_refused(array: np.ndarray, protocol: int) -> None:
    with pytest.raises(UnsafePayload) as refused:
        roundtrip(array, protocol)
    assert "object" in refused.value.type_name or "Plain" in refused.value.type_name


def test_object_dtype_and_scalar_refused() -> None:
    with pytest.raises(UnsafePayload, match="object"):
        roundtrip(np.dtype("O"))
    with pytest.raises(UnsafePayload, match="object"):
        roundtrip(np.zeros(1, dtype=[("o", "O")])[0])  # a NumPy void scalar with an object field


def test_unregistered_class_is_refused() -> None:
    with pytest.raises(UnsafePayload) as refused:
        roundtrip(Plain(1))
    assert refused.value.type_name == "hostile_payloads.Plain"


def test_refusal_happens_before_any_import() -> None:
    assert "antigravity" not in sys.modules  # importing it would open a web browser
    with pytest.raises(UnsafePayload, match=r"antigravity\.fly"):
        restricted_loads(b"cantigravity\nfly\n.")
    with pytest.raises(UnsafePayload):
        restricted_loads(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x0bantigravity\x8c\x03fly\x93.")
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    "data",
    [
        # builtins.type with three arguments would create a class.
        b"\x80\x02c__builtin__\ntype\nX\x01\x00\x00\x00X)}\x87R.",
        # Codec names are looked up, and may import a module.
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.",
        b"\x80\x02c__builtin__\nbytes\nX\x01\x00\x00\x00xX\x04\x00\x00\x00idna\x86R.",
        # str(x) is never called by a real pickle.
        b"\x80\x02c__builtin__\nstr\nK\x01\x85R.",
        # ndarray called directly could build an object array over raw bytes.
        b"\x80\x02cnumpy\nndarray\nK\x01\x85X\x01\x00\x00\x00O\x86R.",
    ],
    ids=["type-3-args", "codecs-rot13", "bytes-idna", "str-call", "ndarray-call"],
)
def test_allowlisted_names_refuse_unsafe_calls(data: bytes) -> None:
    with pytest.raises(UnsafePayload):
        restricted_loads(data)


def test_defaultdict_factory_must_be_a_value_type() -> None:
    with pytest.raises(UnsafePayload, match="default factory"):
        roundtrip(collections.defaultdict(uuid.UUID))


def test_pickle_cannot_change_an_allowlisted_class() -> None:
    # GLOBAL fractions.Fraction, then BUILD with slot state {"x": 1}: setattr on the class.
    data = b"\x80\x02cfractions\nFraction\nN}X\x01\x00\x00\x00xK\x01s\x86b."
    with pytest.raises(UnsafePayload):
        restricted_loads(data)
    assert not hasattr(fractions.Fraction, "x")
    # The same against one of the decoder's own functions (the C unpickler's path).
    data = b"\x80\x02ccopyreg\n__newobj__\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    with pytest.raises((UnsafePayload, AttributeError)):
        restricted_loads(data)
    assert_same({"ok": 1}, roundtrip({"ok": 1}))


def test_extension_codes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(copyreg._inverted_registry, 240, ("os", "system"))  # type: ignore[attr-defined]
    monkeypatch.setitem(copyreg._extension_registry, ("os", "system"), 240)  # type: ignore[attr-defined]
    with pytest.raises(pickle.UnpicklingError, match="extension"):
        restricted_loads(b"\x80\x02\x82\xf0.")
    assert_same([1, 2], roundtrip([1, 2]))  # with a registry, everything takes the strict path


# --------------------------------------------------------------------------------------------
# Tracebacks: rebuilt from names and line numbers only.


class _PickledTraceback:
    """Pickles as tblib's unpickle_traceback(frame, lineno, next), with whatever we put in."""

    def __init__(self, frame: Any, lineno: Any, next_: Any) -> None:
        self.args = (frame, lineno, next_)

    def __reduce__(self):
        return tblib.pickling_support.unpickle_traceback, self.args


def real_tblib_traceback() -> tblib.Traceback:
    try:
        raise_from_here("x")
    except ValueError as e:
        return tblib.Traceback(e.__traceback__)
    raise AssertionError


def test_traceback_locals_are_dropped() -> None:
    tb = real_tblib_traceback()
    # tblib itself would exec "raise __traceback_maker" with these locals: KeyboardInterrupt
    # would escape from pickle.loads.
    tb.tb_frame.f_locals = {"__traceback_maker": KeyboardInterrupt}
    rebuilt = restricted_loads(pickle.dumps(_PickledTraceback(tb.tb_frame, tb.tb_lineno, tb.tb_next)))
    assert isinstance(rebuilt, types.TracebackType)
    assert rebuilt.tb_frame.f_locals == {}


def test_traceback_cycle_is_cut() -> None:
    tb = real_tblib_traceback()
    tb.tb_next = tb  # tblib's own code would loop forever on this
    rebuilt = restricted_loads(pickle.dumps(_PickledTraceback(tb.tb_frame, tb.tb_lineno, tb)))
    assert 1 <= len(traceback.extract_tb(rebuilt)) <= 3


def test_traceback_cannot_point_at_a_device_file() -> None:
    tb = real_tblib_traceback()
    tb.tb_frame.f_code.co_filename = "/dev/zero"  # formatting would read it forever
    rebuilt = restricted_loads(pickle.dumps(_PickledTraceback(tb.tb_frame, tb.tb_lineno, None)))
    assert traceback.extract_tb(rebuilt)[0].filename == "<remote> /dev/zero"
    traceback.format_tb(rebuilt)


# --------------------------------------------------------------------------------------------
# Remote exceptions.


def test_refused_exception_becomes_remote_task_error() -> None:
    data, tb_data = pickled_with_traceback(lambda: hostile_payloads.raise_hostile_error("boom"))
    with pytest.raises(UnsafePayload, match="HostileError"):
        restricted_loads(data)
    error, tb = decode_exception(data, tb_data)
    assert type(error) is RemoteTaskError
    assert error.type_name == "hostile_payloads.HostileError"
    assert error.message == "boom"
    assert "raise_hostile_error" in error.traceback_text
    assert isinstance(tb, types.TracebackType)
    shown = str(error)
    assert "hostile_payloads.HostileError" in shown and "boom" in shown and "raise_hostile_error" in shown


def test_remote_task_error_prefers_the_texts_distributed_sent() -> None:
    data, _ = pickled_with_traceback(lambda: hostile_payloads.raise_hostile_error("boom"))
    error, tb = decode_exception(data, None, exception_text="HostileError('boom')", traceback_text="  line 1\n")
    assert (error.type_name, error.message, error.traceback_text, tb) == (
        "hostile_payloads.HostileError",
        "HostileError('boom')",
        "  line 1\n",
        None,
    )


def test_allowed_exception_with_refused_argument(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    error, _ = decode_exception(pickle.dumps(ValueError(Hostile(str(marker)))))
    assert type(error) is RemoteTaskError and error.type_name == "builtins.ValueError"
    assert "system" in error.message
    assert not marker.exists()


def test_allowed_exception_comes_back_as_itself() -> None:
    data, tb_data = pickled_with_traceback(lambda: raise_from_here("x"))
    error, tb = decode_exception(data, tb_data)
    assert type(error) is ValueError and error.args == ("x",)
    assert tb is not None


# --------------------------------------------------------------------------------------------
# Classes of the notebook (``__main__``) and registered classes.


class NotebookPoint:
    __module__ = "__main__"
    __qualname__ = "NotebookPoint"

    def __init__(self, x: int, y: int) -> None:
        raise AssertionError("the decoder must not call __init__")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)


@dataclasses.dataclass(frozen=True)
class NotebookRecord:
    name: str
    values: tuple[float, ...]


NotebookRecord.__module__ = "__main__"


class NotebookPair(NamedTuple):
    left: int
    right: str


NotebookPair.__module__ = "__main__"


class NotebookError(Exception):
    __module__ = "__main__"


class NotebookCalls:
    """Its __reduce__ asks for the class to be called: refused, even for a notebook class."""

    __module__ = "__main__"

    def __reduce__(self):
        return NotebookCalls, ()


class NotebookHostile:
    __module__ = "__main__"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def raise_notebook_error() -> None:
    raise NotebookError("nb")


NOTEBOOK_CLASSES = [NotebookPoint, NotebookRecord, NotebookPair, NotebookError, NotebookCalls, NotebookHostile]


@pytest.fixture
def notebook(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """This process's ``__main__``, defining the classes a notebook cell would."""
    main = sys.modules["__main__"]
    for cls in NOTEBOOK_CLASSES:
        monkeypatch.setattr(main, cls.__qualname__, cls, raising=False)
    return main


def new_point(x: int, y: int) -> NotebookPoint:
    point = object.__new__(NotebookPoint)
    point.x, point.y = x, y
    return point


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_notebook_classes_are_rebuilt_from_state(notebook: types.ModuleType, protocol: int) -> None:
    point = new_point(1, [2, 3])
    assert_same(point, roundtrip(point, protocol))
    record = NotebookRecord("r", (1.0, 2.5))
    assert_same(record, roundtrip(record, protocol))
    pair = NotebookPair(1, "b")
    assert_same(pair, roundtrip(pair, protocol))
    assert_same([point, {"pair": pair}], roundtrip([point, {"pair": pair}], protocol))


def test_notebook_exception_comes_back_as_itself(notebook: types.ModuleType) -> None:
    data, _ = pickled_with_traceback(raise_notebook_error)
    error = restricted_loads(data)
    assert type(error) is NotebookError and error.args == ("nb",)


def test_notebook_class_is_never_called(notebook: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(UnsafePayload, match="NotebookCalls"):
        roundtrip(NotebookCalls())
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePayload, match="system"):
        roundtrip(NotebookHostile(str(marker)))
    assert not marker.exists()


def test_main_classes_must_really_be_defined_in_main(monkeypatch: pytest.MonkeyPatch) -> None:
    # Named __main__.NotebookPoint, but __main__ does not define it (the cell was not run).
    monkeypatch.delattr(sys.modules["__main__"], "NotebookPoint", raising=False)
    crafted = b"\x80\x04\x8c\x08__main__\x8c\rNotebookPoint\x93)\x81}b."
    with pytest.raises(UnsafePayload, match=r"__main__\.NotebookPoint"):
        restricted_loads(crafted)


class Registered:
    def __init__(self, value: object) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Registered and other.value == self.value


def test_allow_class_and_disallow_class() -> None:
    with pytest.raises(UnsafePayload):
        roundtrip(Registered(1))
    allow_class(Registered)
    try:
        for protocol in PROTOCOLS:
            assert_same(Registered((1, "x")), roundtrip(Registered((1, "x")), protocol))
    finally:
        disallow_class(Registered)
    with pytest.raises(UnsafePayload):
        roundtrip(Registered(1))


def test_allow_class_for_a_main_class_outside_sys_modules_main(monkeypatch: pytest.MonkeyPatch) -> None:
    # A notebook whose user namespace is not sys.modules["__main__"]: its classes say
    # __module__ == "__main__" but only allow_class can make them known.
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "NotebookPoint", NotebookPoint, raising=False)
    data = pickle.dumps(new_point(1, 2))
    monkeypatch.delattr(main, "NotebookPoint")
    with pytest.raises(UnsafePayload, match=r"__main__\.NotebookPoint"):
        restricted_loads(data)
    allow_class(NotebookPoint)
    try:
        assert_same(new_point(1, 2), restricted_loads(data))
    finally:
        disallow_class(NotebookPoint)


def test_allow_namespace_registers_only_classes_defined_there() -> None:
    defined = type("Defined", (), {"__module__": "cell_namespace"})
    namespace = {"__name__": "cell_namespace", "Defined": defined, "np": np, "OrderedDict": collections.OrderedDict}
    try:
        assert allow_namespace(namespace) == [defined]
    finally:
        disallow_class(defined)


# --------------------------------------------------------------------------------------------
# Property: random nested allowed values come back exactly.

_hashables = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63, max_value=2**400),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
        st.fractions(),
        st.decimals(allow_nan=False),
        st.datetimes(timezones=st.sampled_from([None, UTC])),
        st.timedeltas(),
        st.uuids(),
    ),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint16, np.bool_, np.complex128]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)
_values = st.recursive(
    _hashables
    | st.floats()
    | st.complex_numbers(allow_nan=False)
    | st.binary(max_size=8).map(bytearray)
    | _arrays
    | _arrays.map(lambda a: a[()] if a.ndim == 0 else a),  # NumPy scalars too
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_hashables, inner, max_size=4),
        st.sets(_hashables, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(collections.OrderedDict),
        st.dictionaries(st.from_regex(r"\A[a-z]{1,5}\Z"), inner, max_size=3).map(lambda d: types.SimpleNamespace(**d)),
        st.lists(inner, max_size=3).map(collections.deque),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(value=_values, protocol=st.sampled_from(list(PROTOCOLS)))
def test_random_nested_allowed_values_roundtrip_exactly(value: Any, protocol: int) -> None:
    assert_same(value, roundtrip(value, protocol))


# --------------------------------------------------------------------------------------------
# Wiring into distributed (no processes).


def distributed_module(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]


def test_install_is_idempotent_and_uninstall_restores() -> None:
    protocol_pickle = distributed_module("distributed.protocol.pickle")
    core, client = distributed_module("distributed.core"), distributed_module("distributed.client")
    was = trust.is_decoder_installed()
    trust.uninstall_decoder()
    try:
        originals = (protocol_pickle.loads, core.clean_exception, client.loads, client.clean_exception, client.pickle)
        originals += (client.Client._gather,)
        assert client.pickle is pickle
        trust.install_decoder()
        trust.install_decoder()
        assert trust.is_decoder_installed()
        assert protocol_pickle.loads is not originals[0] and client.loads is protocol_pickle.loads
        assert core.clean_exception is not originals[1] and client.clean_exception is core.clean_exception
        assert client.pickle is not pickle and client.pickle.loads is restricted_loads
        assert client.Client._gather is not originals[5]  # through the scheduler, which checks commitments
        trust.uninstall_decoder()
        trust.uninstall_decoder()
        assert not trust.is_decoder_installed()
        assert (
            protocol_pickle.loads, core.clean_exception, client.loads, client.clean_exception, client.pickle,
            client.Client._gather,
        ) == originals  # fmt: skip
        with trust.decoder_installed():
            assert trust.is_decoder_installed()
        assert not trust.is_decoder_installed()
    finally:
        if was:
            trust.install_decoder()


def test_no_loaded_distributed_module_keeps_an_unrestricted_decoder() -> None:
    originals = {
        "loads": distributed_module("distributed.protocol.pickle").loads,
        "clean_exception": distributed_module("distributed.core").clean_exception,
        "import_allowed_module": distributed_module("distributed.protocol.serialize").import_allowed_module,
    }
    if trust.is_decoder_installed():
        pytest.skip("measured against the originals, which are hidden while installed")
    with trust.decoder_installed():
        for name, module in list(sys.modules.items()):
            if name == "distributed" or name.startswith("distributed."):
                for attribute, value in vars(module).items():
                    assert not any(value is original for original in originals.values()), f"{name}.{attribute}"
                    assert value is not pickle, f"{name}.{attribute} is the standard pickle module"
        serialize = sys.modules["distributed.protocol.serialize"]
        numpy_protocol = distributed_module("distributed.protocol.numpy")
        assert serialize.dask_deserialize.dispatch(np.ndarray) is not numpy_protocol.deserialize_numpy_ndarray


# distributed files that unpickle with the *standard* pickle (or cloudpickle) module, reviewed
# by hand (see the docstring of golem_jupyter.trust._hooks): protocol/pickle.py is the
# loads that install() replaces, client.py is covered by the module swap, the others run in
# the scheduler and worker processes only.
REVIEWED_STD_PICKLE_DECODERS = {
    "protocol/pickle.py",
    "client.py",
    "scheduler.py",
    "shuffle/_core.py",
    "shuffle/_pickle.py",
}


def test_distributed_unpickling_call_sites_are_the_reviewed_ones() -> None:
    root = Path(distributed.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("tests/") or "/tests/" in relative:
            continue
        source = path.read_text()
        # Binding the name ``pickle`` to the standard module, then calling its decoders...
        std_pickle = re.search(r"^\s*import (cloud)?pickle\b", source, re.M)
        if std_pickle and re.search(r"\b(cloud)?pickle\.(loads?|Unpickler)\(", source):
            found.add(relative)
        # ... or importing a decoder from it by name.
        if re.search(r"^\s*from (cloud)?pickle import .*\b(loads?|Unpickler)\b", source, re.M):
            found.add(relative)
    assert found == REVIEWED_STD_PICKLE_DECODERS, "distributed changed where it unpickles: review trust/_hooks.py"


def test_pickle_and_dask_families_refuse_hostile_bytes(tmp_path: Path) -> None:
    from distributed.protocol import deserialize, serialize

    marker = tmp_path / "pwned"
    header, frames = serialize(Hostile(str(marker)), serializers=["pickle"])
    with trust.decoder_installed():
        with pytest.raises(UnsafePayload, match="system"):
            deserialize(header, frames)
        array = np.arange(10.0).reshape(2, 5)
        header, frames = serialize(array, serializers=["dask"])
        assert header["serializer"] == "dask"
        assert_same(array, deserialize(header, frames))
    assert not marker.exists()


def test_pickled_frames_in_messages_refuse_hostile_bytes(tmp_path: Path) -> None:
    from distributed.protocol import dumps, loads
    from distributed.protocol.serialize import ToPickle

    marker = tmp_path / "pwned"
    frames = dumps({"op": "x", "value": ToPickle(Hostile(str(marker)))})
    with trust.decoder_installed(), pytest.raises(UnsafePayload, match="system"):
        loads(frames)
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [(0, "|O8"), (0, ("|O", (2,))), (1, pickle.dumps(np.dtype("O")))])
def test_dask_numpy_header_cannot_make_an_object_array(dtype: Any) -> None:
    # With plain distributed this header makes NumPy read 8 provider bytes as an object pointer.
    from distributed.protocol import deserialize

    header = {
        "serializer": "dask",
        "type-serialized": pickle.dumps(np.ndarray),
        "sub-header": {"dtype": dtype, "shape": (1,), "strides": (16,), "writeable": [True]},
    }
    with trust.decoder_installed(), pytest.raises(UnsafePayload, match="object"):
        deserialize(header, [bytearray(b"A" * 16)])


def test_clean_exception_turns_refused_types_into_remote_task_error() -> None:
    from distributed.core import error_message

    try:
        hostile_payloads.raise_hostile_error("boom")
    except hostile_payloads.HostileError as e:
        message = error_message(e)  # as a worker builds it (it can unpickle its own classes)
    exception, tb = message["exception"].data, message["traceback"].data
    with trust.decoder_installed():
        from distributed import client, core

        typ, error, remote_tb = core.clean_exception(exception, tb)
        assert typ is RemoteTaskError and error.type_name == "hostile_payloads.HostileError"
        assert error.message == "boom" and "raise_hostile_error" in error.traceback_text
        assert isinstance(remote_tb, types.TracebackType)
        _, error, _ = client.clean_exception(**{**message, "exception": exception, "traceback": tb})
        assert error.message == message["exception_text"]


def test_worker_warn_events_are_decoded_restricted(tmp_path: Path) -> None:
    from distributed.client import _handle_warn

    marker = tmp_path / "pwned"
    with trust.decoder_installed():
        with pytest.raises(UnsafePayload, match="system"):
            _handle_warn(("warn", {"message": pickle.dumps(Hostile(str(marker)))}))
        with pytest.warns(UserWarning, match="from a worker"):
            _handle_warn(("warn", {"message": pickle.dumps("from a worker"), "category": pickle.dumps(UserWarning)}))
    assert not marker.exists()


def test_enum_messages_never_import() -> None:
    from distributed.protocol.serialize import msgpack_decode_default

    assert "dask.__main__" not in sys.modules
    with trust.decoder_installed(), pytest.raises(UnsafePayload, match="import"):
        msgpack_decode_default({"__Enum__": True, "__module__": "dask.__main__", "__name__": "x", "name": "y"})
    assert "dask.__main__" not in sys.modules


# --------------------------------------------------------------------------------------------
# A real scheduler and worker, as separate processes.


SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker", "--host", "127.0.0.1"]


def _start(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    process.wait(1)


def _wait_for_scheduler(scheduler_file: Path, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited:\n{log.read_text()}")
        try:
            if json.loads(scheduler_file.read_text()).get("address"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"dask scheduler did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def scheduler_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A dask scheduler and one worker (no nanny), as subprocesses in their own process groups."""
    directory = tmp_path_factory.mktemp("dask")
    path = directory / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    processes: list[subprocess.Popen] = []
    try:
        scheduler_log = directory / "scheduler.log"
        processes.append(
            _start(
                [*SCHEDULER, "--no-dashboard", "--scheduler-file", str(path)],
                scheduler_log,
                directory,
                env,
            )
        )
        _wait_for_scheduler(path, processes[0], scheduler_log)
        processes.append(
            _start(
                [*WORKER, "--scheduler-file", str(path), "--nthreads", "2", "--no-nanny", "--no-dashboard"],
                directory / "worker.log",
                directory,
                env,
            )
        )
        yield path
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def client(scheduler_file: Path) -> Iterator[distributed.Client]:
    with trust.decoder_installed(), distributed.Client(scheduler_file=str(scheduler_file), timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        yield client


def test_cluster_hostile_result_is_refused(client: distributed.Client, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    future = client.submit(hostile_payloads.make_hostile, str(marker), pure=False)
    with pytest.raises(UnsafePayload) as refused:
        future.result(timeout=30)
    assert refused.value.type_name.endswith(".system")
    with pytest.raises(UnsafePayload, match="system"):
        client.gather([future])
    with pytest.raises(UnsafePayload, match=r"hostile_payloads\.Plain"):
        client.submit(hostile_payloads.make_plain, 1, pure=False).result(timeout=30)
    assert not marker.exists()


CLUSTER_VALUES = {
    "tuple": (1, "two", 3.0),
    "set": {1, 2, 3},
    "dict": {"a": [1, 2], "b": {"c": None}},
    "big-int": 2**200 + 12345,
    "float-array": np.linspace(0.0, 1.0, 11),
    "int-array": np.arange(1000, dtype=np.int64).reshape(10, 100),
    "numpy-scalar": np.float32(2.5),
    "fraction": fractions.Fraction(1, 3),
}


def test_cluster_allowed_values_keep_exact_types(client: distributed.Client) -> None:
    futures = {name: client.submit(hostile_payloads.identity, value) for name, value in CLUSTER_VALUES.items()}
    for name, future in futures.items():
        assert_same(CLUSTER_VALUES[name], future.result(timeout=30))
    gathered = client.gather(list(futures.values()))
    for expected, actual in zip(CLUSTER_VALUES.values(), gathered, strict=True):
        assert_same(expected, actual)
    assert_same(2**200 + 12345, client.submit(hostile_payloads.big_int, pure=False).result(timeout=30))
    # Chunks of a dask array travel in the 'dask' family (NumPy's own deserializer).
    array = da.arange(24, chunks=5, dtype=np.int32).reshape(4, 6) * 2
    assert_same(np.arange(24, dtype=np.int32).reshape(4, 6) * 2, array.compute())
    assert_same(np.int64(2 * sum(range(24))), array.sum().compute())
    floats = da.ones((6, 4), chunks=(3, 2)) / 4
    assert_same(np.full((6, 4), 0.25), floats.compute())


def test_cluster_remote_exceptions(client: distributed.Client) -> None:
    with pytest.raises(ValueError, match=r"^x$"):
        client.submit(hostile_payloads.raise_value_error, pure=False).result(timeout=30)
    future = client.submit(hostile_payloads.raise_hostile_error, "no such luck", pure=False)
    with pytest.raises(RemoteTaskError) as raised:
        future.result(timeout=30)
    error = raised.value
    assert error.type_name == "hostile_payloads.HostileError"
    assert error.message == "no such luck"
    assert "raise_hostile_error" in error.traceback_text
    with pytest.raises(RemoteTaskError):
        client.gather(future)
    # The client keeps working.
    assert client.submit(hostile_payloads.identity, (1, 2), pure=False).result(timeout=30) == (1, 2)


def test_cluster_results_with_provider_sizes_and_base_exceptions(client: distributed.Client) -> None:
    """A worker's result that asks for a terabyte, and one that is a SystemExit (DESIGN.md section 6)."""
    future = client.submit(hostile_payloads.make_hostile_size, 2**40, pure=False)
    with pytest.raises(UnsafePayload, match="a size"):
        future.result(timeout=30)
    exit_ = client.submit(hostile_payloads.return_system_exit, 3, pure=False).result(timeout=30)
    assert type(exit_) is RemoteTaskError and exit_.type_name == "builtins.SystemExit" and exit_.message == "3"
    assert client.submit(hostile_payloads.identity, [1, (2,)], pure=False).result(timeout=30) == [1, (2,)]


def test_cluster_after_uninstall_distributed_is_unchanged(client: distributed.Client) -> None:
    trust.uninstall_decoder()
    try:
        assert client.submit(hostile_payloads.make_plain, 7, pure=False).result(timeout=30) == Plain(7)
        with pytest.raises(hostile_payloads.HostileError, match="plain again"):
            client.submit(hostile_payloads.raise_hostile_error, "plain again", pure=False).result(timeout=30)
    finally:
        trust.install_decoder()
    with pytest.raises(UnsafePayload):
        client.submit(hostile_payloads.make_plain, 8, pure=False).result(timeout=30)
