"""The restricted decoder's limits (DESIGN.md section 6): sizes, nesting, BaseException, recursion limit.

A provider with a valid worker certificate chooses every byte of its results. Each test here
is an attack that worked against the decoder before these limits: a few bytes that made it
allocate gigabytes (a size or a range handed to a constructor), a nested value that crashed the
requestor's kernel (CPython recurses in C when it hashes, frees or prints nested values), a
``SystemExit`` rebuilt in the requestor's process. Payloads that would kill the process or
allocate real memory if the defence failed run in a subprocess, under a memory limit.
"""

from __future__ import annotations

import collections
import fractions
import gc
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
import tracemalloc
import types
from pathlib import Path

import hostile_payloads as hp
import numpy as np
import pytest
import tblib.pickling_support
from conftest import send

from golem_jupyter.chain import Offer
from golem_jupyter.trust import (
    PayloadTooDeep,
    PayloadTooLarge,
    RemoteTaskError,
    UnsafePayload,
    _reader,
    _rules,
    allow_class,
    decode_exception,
    disallow_class,
    restricted_loads,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that can import the tests' helpers; never raises."""
    path = os.pathsep.join(filter(None, [str(TESTS), str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )


def allowed_allocation(data: bytes) -> int:
    return _rules.ALLOCATION_FACTOR * len(data) + _rules.ALLOCATION_FLOOR


# --------------------------------------------------------------------------------------------
# 1. No constructor is called with a size or a range the provider chose.

BYTE_SIZED = ("bytearray(n)", "bytes(n)", "numpy _reconstruct(ndarray, (n,), 'b')", "numpy scalar(dtype('V<n>'))")
SMALL_N = {name: 10**7 if name in BYTE_SIZED else 10**6 for name in hp.SIZED}


@pytest.mark.parametrize("name", hp.SIZED)
def test_provider_chosen_sizes_are_refused_before_allocating(name: str) -> None:
    """Sizes that plain pickle would allocate (10 MB or a million elements from ~40 bytes).

    Before the limits these decoded (or failed only after materialising the range); now the
    decoder refuses before calling the constructor, so the peak memory of the decode stays
    within the allowance (4x the bytes received + 1 MiB). A size or a range given to a
    constructor is refused whatever its value; NumPy's shapes and itemsizes count against the
    allowance (PayloadTooLarge).
    """
    data = hp.sized(name, SMALL_N[name])
    assert len(data) < 100
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePayload) as refused:
            restricted_loads(data, source="0xabc")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < allowed_allocation(data), f"{name}: the decode allocated {peak} bytes"
    message = str(refused.value)
    assert message.startswith("Provider 0xabc sent") and "Return plain data" in message
    if name.startswith("numpy"):
        assert type(refused.value) is PayloadTooLarge and "smaller results" in message
    elif "range" in name:
        assert "range" in message
    else:
        assert "a size (an int)" in message


def test_huge_sizes_are_refused_before_allocating_under_a_memory_limit() -> None:
    """The same constructors with sizes of 2**40 (1 TiB), in a process that may map only 1 GiB more.

    A decoder that called the constructor would fail with MemoryError (bytearray, list, the
    array) or grow until it hit the limit (set, frozenset, deque); the refusal must come first.
    """
    result = run_python(
        """
        import json, resource
        import hostile_payloads as hp
        from golem_jupyter.trust import UnsafePayload, restricted_loads

        with open("/proc/self/status") as status:
            vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        outcome = {}
        for name in hp.SIZED:
            try:
                restricted_loads(hp.sized(name, 2**40))
                outcome[name] = "decoded"
            except UnsafePayload:
                outcome[name] = "refused"
            except BaseException as error:
                outcome[name] = type(error).__name__
        print(json.dumps(outcome))
        """,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == dict.fromkeys(hp.SIZED, "refused")


@pytest.mark.parametrize("constructor", ["tuple", "list", "frozenset", "set", "deque", "bytearray", "bytes"])
def test_copies_of_one_memoized_container_are_counted(constructor: str) -> None:
    """``tuple(L)`` 2,000 times on one 1,000-item list: 36 KB of pickle, 16 MB of copies.

    (For bytes and bytearray, 2,000 copies of one 1,000-byte string: 2 MB.)
    """
    function = hp.glob("collections" if constructor == "deque" else "builtins", constructor)
    data = hp.copies(function, items=1000, times=2000, as_bytes=constructor.startswith("byte"))
    with pytest.raises(PayloadTooLarge, match=constructor):
        restricted_loads(data)
    # The same shape, small enough, decodes: one honest copy per container is within budget.
    assert len(restricted_loads(hp.copies(function, items=10, times=10, as_bytes=constructor.startswith("byte")))) == 10


def test_defaultdict_and_ordereddict_copies_are_counted() -> None:
    items = b"}(" + b"".join(hp.integer(i) + hp.integer(i) for i in range(200)) + b"u"  # a 200-key dict
    for function in (hp.glob("collections", "defaultdict"), hp.glob("collections", "OrderedDict")):
        args = b"N" + hp.memo_get(1) if b"defaultdict" in function else hp.memo_get(1)
        body = function + b"\x94" + items + b"\x940" + b"](" + (hp.memo_get(0) + b"(" + args + b"tR") * 5000 + b"e"
        with pytest.raises(PayloadTooLarge):
            restricted_loads(hp.pickle_of(body))


def test_fraction_cannot_be_asked_to_compute_a_power_of_ten() -> None:
    """``Fraction('1e1000000')`` computes 10**1000000: 415 KB and a long pause from 20 bytes."""
    with pytest.raises(UnsafePayload, match="Fraction"):
        restricted_loads(hp.fraction_with_exponent(10**6))
    for value in (fractions.Fraction(-22, 7), fractions.Fraction(10**50, 3)):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert restricted_loads(pickle.dumps(value, protocol=protocol)) == value
    # Older Pythons pickled Fraction as its text: that form stays readable.
    assert restricted_loads(hp.pickle_of(hp.call(hp.glob("fractions", "Fraction"), hp.text("-22/7")))) == (
        fractions.Fraction(-22, 7)
    )


class Row(tuple):
    """A notebook tuple subclass: tuple.__new__ copies its argument."""

    __slots__ = ()


class Blob(bytes):
    """A notebook bytes subclass: bytes.__new__(Blob, n) allocates n bytes."""


@pytest.fixture
def builtin_subclasses():
    for cls in (Row, Blob):
        allow_class(cls)
    yield
    for cls in (Row, Blob):
        disallow_class(cls)


def test_subclasses_of_sized_builtins_take_no_size(builtin_subclasses: None) -> None:
    row, blob = hp.glob(__name__, "Row"), hp.glob(__name__, "Blob")
    attacks = {
        "NEWOBJ Row(range)": hp.new(row, hp.provider_range(10**6)),
        "NEWOBJ Blob(n)": hp.new(blob, hp.integer(10**7)),
        "_reconstructor(Row, tuple, range)": hp.call(
            hp.glob("copyreg", "_reconstructor"), row, hp.glob("builtins", "tuple"), hp.provider_range(10**6)
        ),
        "_reconstructor(Blob, bytes, n)": hp.call(
            hp.glob("copyreg", "_reconstructor"), blob, hp.glob("builtins", "bytes"), hp.integer(10**7)
        ),
    }
    for name, body in attacks.items():
        with pytest.raises(UnsafePayload):
            restricted_loads(hp.pickle_of(body))
        assert name
    # Honest pickles of the same classes still decode, in every protocol.
    for value in (Row((1, "a")), Blob(b"\x00xyz")):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            rebuilt = restricted_loads(pickle.dumps(value, protocol=protocol))
            assert type(rebuilt) is type(value) and rebuilt == value


def test_slices_hold_only_plain_values() -> None:
    with pytest.raises(UnsafePayload, match="slice"):
        restricted_loads(hp.deep_slices(3))
    assert restricted_loads(pickle.dumps(slice(1, None, -2))) == slice(1, None, -2)


def test_large_in_band_bytes_decode_on_either_path() -> None:
    """64 MiB of random bytes in the pickle look like 2 million possible tuple levels: the strict
    reader reads them (in a few opcodes) rather than the C reader on a 300 MiB stack."""
    blob = os.urandom(64 << 20)
    data = pickle.dumps({"blob": blob, "rows": [(1, 2)] * 10}, protocol=4)
    assert _reader._stack_for(_reader._nesting_bounds(data)[1]) > _reader._MAX_STACK
    started = time.monotonic()
    assert restricted_loads(data)["blob"] == blob
    assert time.monotonic() - started < 30
    small = pickle.dumps({"blob": blob[: 4 << 20]}, protocol=4)  # the C reader, on a larger stack
    assert restricted_loads(small)["blob"] == blob[: 4 << 20]


def test_honest_values_within_the_allowance_decode() -> None:
    """Protocol 0-2 pickles name set/frozenset/bytearray and copy one list each: that is allowed."""
    values = [set(range(5000)), frozenset(range(5000)), bytearray(range(256)) * 100, collections.deque(range(5000))]
    for value in values:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert restricted_loads(pickle.dumps(value, protocol=protocol)) == value
    array = np.arange(10**6, dtype=np.float64)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    np.testing.assert_array_equal(restricted_loads(data, buffers=buffers), array)
    for protocol in (2, 4):  # in band: the data is in the pickle, the allowance is 4x that
        np.testing.assert_array_equal(restricted_loads(pickle.dumps(array, protocol=protocol)), array)


# --------------------------------------------------------------------------------------------
# 2. Nesting depth, on both readers.


def test_a_400_kb_nested_list_is_refused() -> None:
    """The observed attack: 200,000 nested lists in 400 KB, built by opcodes alone (no name).

    The C unpickler builds it without asking find_class, so only a depth check catches it;
    printing it with a raised recursion limit overflowed the C stack.
    """
    data = hp.deep_list(200_000)
    assert len(data) < 410_000
    with pytest.raises(PayloadTooDeep) as refused:
        restricted_loads(data, source="0xprovider")
    assert "0xprovider" in str(refused.value) and str(_rules.MAX_DEPTH) in str(refused.value)
    with pytest.raises(PayloadTooDeep):
        restricted_loads(hp.deep_tuple(200_000))


def test_depth_is_checked_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deep list never reaches the strict reader: the C reader's result is checked."""

    def no_strict_reader(*args: object, **kwargs: object) -> None:
        raise AssertionError("the strict reader ran")

    monkeypatch.setattr(_reader._StrictReader, "__init__", no_strict_reader)
    with pytest.raises(PayloadTooDeep):
        restricted_loads(hp.deep_list(5000))
    assert restricted_loads(pickle.dumps([[1, [2]], {"a": (3,)}])) == [[1, [2]], {"a": (3,)}]


def nested(depth: int, leaf: object = 0) -> object:
    value = leaf
    for level in range(depth - 1):
        value = [value] if level % 3 == 0 else ({"k": value} if level % 3 == 1 else (value,))
    return [value]


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_depth_limit_is_exact(protocol: int) -> None:
    """MAX_DEPTH levels of containers decode; one more is refused (lists, dicts and tuples)."""
    limit = _rules.MAX_DEPTH
    at_limit = pickle.dumps(nested(limit), protocol=protocol)
    assert restricted_loads(at_limit) == nested(limit)
    with pytest.raises(PayloadTooDeep):
        restricted_loads(pickle.dumps(nested(limit + 1), protocol=protocol))


def test_depth_limit_is_a_module_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rules, "MAX_DEPTH", 10)
    assert restricted_loads(pickle.dumps(nested(10))) == nested(10)
    with pytest.raises(PayloadTooDeep, match="10 levels"):
        restricted_loads(pickle.dumps(nested(11)))


def test_depth_counts_every_path_of_shared_and_cyclic_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rules, "MAX_DEPTH", 50)
    # A DAG: level i holds level i+1 twice (2**60 paths, 60 levels): refused, and quickly.
    value: list = []
    for _ in range(60):
        value = [value, value]
    with pytest.raises(PayloadTooDeep):
        restricted_loads(pickle.dumps(value))
    # A shallow value shared by a deep one is as deep as the deepest path to it.
    shared: list = [1]
    deep = nested(45, shared)
    assert restricted_loads(pickle.dumps([shared, deep]))[0] == [1]
    with pytest.raises(PayloadTooDeep):
        restricted_loads(pickle.dumps([shared, nested(49, [shared])]))
    # One big list shared a thousand times is read once, not a thousand times.
    big = list(range(10**6))
    started = time.monotonic()
    rebuilt = restricted_loads(pickle.dumps([[big] * 1000, {"k": big}]))
    assert rebuilt[0][999] is rebuilt[1]["k"] and len(rebuilt[1]["k"]) == 10**6
    assert time.monotonic() - started < 20
    # Cycles are not depth: a list that holds itself decodes (repr shows [...]).
    cyclic: list = [1]
    cyclic.append(cyclic)
    rebuilt = restricted_loads(pickle.dumps({"c": cyclic}))
    assert rebuilt["c"][1] is rebuilt["c"]


def test_depth_through_objects_and_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rules, "MAX_DEPTH", 20)
    namespace: object = None
    for _ in range(25):
        namespace = types.SimpleNamespace(inner=namespace)
    with pytest.raises(PayloadTooDeep):
        restricted_loads(pickle.dumps(namespace))
    error: BaseException = ValueError("leaf")
    for _ in range(25):
        error = ValueError(error)
    with pytest.raises(PayloadTooDeep):
        restricted_loads(pickle.dumps(error))


DEEP_IN_SUBPROCESS = {
    # Hashing a deep tuple recurses in C with no recursion check: a segfault during the decode.
    "tuple-as-dict-key": "hp.deep_tuple_as_dict_key(10**6)",
    "tuple-in-set": "hp.deep_tuple_in_set(10**6)",
    # deque, defaultdict and slice free their items recursively: a segfault when the value is
    # dropped, whether the decode is refused at the end or fails half way.
    "deques": "hp.deep_deques(300_000)",
    "deques-then-refused-name": "hp.deep_deques(300_000, hp.REFUSED_NAME)",
    "defaultdicts": "hp.deep_defaultdicts(300_000)",
    "defaultdicts-then-refused-name": "hp.deep_defaultdicts(300_000, hp.REFUSED_NAME)",
    "slices": "hp.deep_slices(300_000)",
    # The same tuples read by the strict reader (which pickles too large for a big stack get).
    "tuple-as-dict-key-strict-reader": "hp.deep_tuple_as_dict_key(10**6); _reader._MAX_STACK = 0",
    "tuple-as-dict-key-named-strict": "hp.pickle_of(hp.glob('collections', 'OrderedDict') + b'0' + KEY[2:-1])",
}


@pytest.mark.parametrize("payload", DEEP_IN_SUBPROCESS)
def test_deep_values_never_crash_the_process(payload: str) -> None:
    result = run_python(
        f"""
        import gc
        import hostile_payloads as hp
        from golem_jupyter.trust import UnsafePayload, _reader, restricted_loads
        KEY = hp.deep_tuple_as_dict_key(10**6)
        data = {DEEP_IN_SUBPROCESS[payload]}
        try:
            restricted_loads(data)
        except UnsafePayload as refused:
            print("refused:", type(refused).__name__)
        else:
            print("decoded")
        gc.collect()
        print("alive")
        """
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split("\n")[-2:] == ["alive", ""]
    assert "refused:" in result.stdout


# --------------------------------------------------------------------------------------------
# 3. BaseExceptions that are not Exceptions arrive as RemoteTaskError.

NOT_EXCEPTIONS = {
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": lambda: KeyboardInterrupt("stop"),
    "GeneratorExit": GeneratorExit,
    "BaseExceptionGroup": lambda: BaseExceptionGroup("group", [KeyboardInterrupt(), ValueError("v")]),
}


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("name", NOT_EXCEPTIONS)
def test_base_exceptions_arrive_as_remote_task_error(name: str, protocol: int) -> None:
    value = NOT_EXCEPTIONS[name]()
    rebuilt = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert type(rebuilt) is RemoteTaskError
    assert rebuilt.type_name == f"builtins.{name}"
    assert rebuilt.message == (str(value) if name != "BaseExceptionGroup" else "group")
    inside = restricted_loads(pickle.dumps([1, {"e": value}], protocol=protocol))
    assert type(inside[1]["e"]) is RemoteTaskError
    error, _ = decode_exception(pickle.dumps(value, protocol=protocol))
    assert type(error) is RemoteTaskError and error.type_name == f"builtins.{name}"


def test_base_exceptions_with_tracebacks_arrive_as_remote_task_error() -> None:
    """distributed pickles task errors with tblib: unpickle_exception(SystemExit, ...)."""
    try:
        raise SystemExit("bye")
    except SystemExit as exit_:
        tblib.pickling_support.install(exit_)
        data, tb_data = pickle.dumps(exit_), pickle.dumps(exit_.__traceback__)
    assert b"unpickle_exception" in data
    error, tb = decode_exception(data, tb_data)
    assert type(error) is RemoteTaskError and error.type_name == "builtins.SystemExit"
    assert error.message == "bye" and "test_decoder_limits.py" in error.traceback_text
    assert tb is not None
    assert type(restricted_loads(data)) is RemoteTaskError


def test_base_exceptions_are_not_built_by_newobj_either() -> None:
    exit_ = hp.glob("builtins", "SystemExit")
    for body in (
        hp.new(exit_, hp.integer(3)),
        hp.call(hp.glob("copyreg", "__newobj__"), exit_, hp.integer(3)),
        hp.call(hp.glob("copyreg", "_reconstructor"), exit_, hp.glob("builtins", "object"), b"N"),
    ):
        try:
            rebuilt = restricted_loads(hp.pickle_of(body))
        except UnsafePayload:
            continue
        assert type(rebuilt) is RemoteTaskError and rebuilt.type_name == "builtins.SystemExit"


def test_exception_groups_of_exceptions_are_still_rebuilt() -> None:
    group = ExceptionGroup("many", [ValueError("a"), KeyError("b")])
    rebuilt = restricted_loads(pickle.dumps(group))
    assert type(rebuilt) is ExceptionGroup and [type(e) for e in rebuilt.exceptions] == [ValueError, KeyError]
    assert restricted_loads(pickle.dumps(SystemExit)) is SystemExit  # the class is a plain value


class NotebookStop(KeyboardInterrupt):
    """A notebook's own KeyboardInterrupt subclass."""


def test_notebook_base_exception_subclass_arrives_as_remote_task_error(monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    NotebookStop.__module__ = "__main__"
    main.NotebookStop = NotebookStop
    monkeypatch.setitem(sys.modules, "__main__", main)
    try:
        rebuilt = restricted_loads(pickle.dumps(NotebookStop("halt")))
    finally:
        NotebookStop.__module__ = __name__
    assert type(rebuilt) is RemoteTaskError and rebuilt.type_name == "__main__.NotebookStop"


# --------------------------------------------------------------------------------------------
# 4. Importing the eth libraries leaves the recursion limit as it was.


@pytest.mark.parametrize(
    "module", ["golem_jupyter.chain", "golem_jupyter.requestor.cluster", "golem_jupyter.chain.embedded", "py_ecc"]
)
def test_importing_the_chain_layer_keeps_the_recursion_limit(module: str) -> None:
    prelude = "import golem_jupyter.chain\n" if module == "py_ecc" else ""
    result = run_python(
        f"""
        import sys
        sys.setrecursionlimit(1234)
        {prelude}
        import {module}
        print(sys.getrecursionlimit())
        """
    )
    assert result.returncode == 0, result.stderr
    # py_ecc imported directly after the chain layer: already imported, so nothing changes.
    assert result.stdout.split() == ["1234"]


def test_repr_of_a_deep_list_raises_after_importing_the_chain_layer() -> None:
    """With py_ecc's limit of 100,000, repr of a 50,000-deep list overflowed the C stack."""
    result = run_python(
        """
        import golem_jupyter.chain
        import golem_jupyter.requestor.cluster
        value = []
        for _ in range(50_000):
            value = [value]
        try:
            repr(value)
        except RecursionError:
            print("RecursionError")
        """
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == ["RecursionError"]


def test_hostile_deep_list_after_importing_the_chain_layer_is_a_clean_error() -> None:
    result = run_python(
        """
        import golem_jupyter.chain
        import hostile_payloads as hp
        from golem_jupyter.trust import PayloadTooDeep, restricted_loads
        try:
            value = restricted_loads(hp.deep_list(200_000))
            print(len(repr(value)))
        except (PayloadTooDeep, RecursionError) as error:
            print(type(error).__name__)
        """
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == ["PayloadTooDeep"]


# --------------------------------------------------------------------------------------------
# 5. Offers with deeply nested capabilities do not crash the requestor.

OFFER_FIELDS = ("h:1", 1, 0, 0, 1, 0, "", 0)
PROVIDER = "0x" + "ab" * 20


@pytest.mark.parametrize(
    "capabilities",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" * 2048 + "]" * 2048, "[" * 10**6],
    ids=["list-100k", "object-50k", "list-2048-fits-the-contract", "unclosed"],
)
def test_offer_with_deeply_nested_capabilities_is_kept_with_unparsed_capabilities(capabilities: str) -> None:
    offer = Offer.from_tuple(PROVIDER, (*OFFER_FIELDS, capabilities))
    assert offer.endpoint == "h:1" and offer.provider == PROVIDER
    assert set(offer.capabilities) == {"unparsed"}


def test_offer_capabilities_that_are_shallow_still_parse() -> None:
    caps = {"cuda": "12.4", "limits": {"disk_gb": [200, {"x": [[1]]}]}}
    offer = Offer.from_tuple(PROVIDER, (*OFFER_FIELDS, json.dumps(caps)))
    assert offer.capabilities == caps


def test_registry_lists_an_offer_with_deeply_nested_capabilities(contracts, providers) -> None:
    """On the chain: 2,048 nested lists fit the contract's 4,096 bytes of capabilities.

    With the recursion limit back at 1,000, json.loads raises RecursionError on them; reading the
    registry must still list the offer (and every other one).
    """
    nested_caps = "[" * 2048 + "]" * 2048
    raw = (*Offer("h:1", 1).as_tuple()[:-1], nested_caps)
    send(contracts.chain, providers[0], contracts.registry().contract.functions.publish(raw))
    contracts.registry(providers[1]).publish(Offer("h:2", 1, capabilities={"cuda": "12"}))
    assert contracts.registry().offer_of(providers[0].address).capabilities == {"unparsed": nested_caps}
    listed = {offer.endpoint: offer.capabilities for offer in contracts.registry().active_offers()}
    assert listed == {"h:1": {"unparsed": nested_caps}, "h:2": {"cuda": "12"}}
