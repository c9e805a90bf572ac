"""Comparing two providers' results (golem_jupyter.trust.compare) and digesting one (digest).

Honest floating-point noise is made for real here (sums in other orders, matrix products blocked
differently, float32 next to float64 cast down) and must pass with the default tolerances; a
liar's typical corruptions must not."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import fractions
import math
import random
import types
from typing import Any, NamedTuple

import numpy as np
import pytest

from golem_jupyter.trust import DEFAULT_ATOL, DEFAULT_RTOL, Mismatch, compare, default_tolerances, digest

CASES = 250


# ---------------------------------------------------------------------------- types and exact values


class Point(NamedTuple):
    x: float
    y: float


@dataclasses.dataclass
class Fit:
    name: str
    loss: float
    weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    value: float


class Plain:
    """A notebook class without ``__eq__``: compared by its attributes."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


class Opaque:
    """No ``__eq__``, no ``__dict__``: compared by its pickle."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getstate__(self) -> Any:
        return self.value

    def __setstate__(self, state: Any) -> None:
        self.value = state


class Unpicklable:
    __slots__ = ("lock",)

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (1, True),
        (True, 1),
        (1.0, np.float64(1.0)),
        (np.float32(1.0), np.float64(1.0)),
        (1, 1.0),
        (1, np.int64(1)),
        ([1, 2], (1, 2)),
        ({"a": 1}, collections.OrderedDict(a=1)),
        (Point(1.0, 2.0), (1.0, 2.0)),
        ("a", b"a"),
        (set(), frozenset()),
        (np.arange(3), [0, 1, 2]),
        (np.ma.masked_array([1.0]), np.array([1.0])),
        (None, 0),
    ],
)
def test_a_different_type_is_a_mismatch(expected: Any, actual: Any) -> None:
    found = compare(expected, actual)
    assert found is not None and found.reason == "type" and found.path == ""
    assert type(expected).__name__ in found.detail and type(actual).__name__ in found.detail


@pytest.mark.parametrize(
    "value",
    [
        0,
        -(10**40),
        True,
        None,
        "naïve",
        b"\x00\xff",
        bytearray(b"ab"),
        range(3),
        fractions.Fraction(1, 3),
        decimal.Decimal("1.10"),
        np.int8(-3),
        np.uint64(2**64 - 1),
        np.bool_(False),
        np.str_("x"),
        np.datetime64("NaT"),
        np.timedelta64(5, "s"),
        {1, 2, 3},
        frozenset({"a"}),
        Point(1.0, float("nan")),
        collections.deque([1, 2.5]),
        collections.Counter("abca"),
        types.SimpleNamespace(a=1, b=[2.0]),
        Fit("a", 0.5, np.ones(3)),
        Slotted(1.5),
        Plain(a=1, b=np.arange(3.0)),
        Opaque([1, 2]),
        ValueError("bad", 3),
        np.array([(1, 2.0, b"x")], dtype=[("a", "i4"), ("b", "f8"), ("c", "S1")]),
        np.array([1, "two", [3.0]], dtype=object),
        np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False]),
        np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"),
        np.zeros((0, 3)),
        np.array(5.0),
        np.void(b"\x01\x02"),
    ],
    ids=repr,
)
def test_a_value_agrees_with_its_own_copy(value: Any) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(value))
    assert compare(value, copy) is None
    assert digest(value) == digest(copy)


@pytest.mark.parametrize(
    ("expected", "actual", "path", "reason"),
    [
        (41, 42, "", "value"),
        ([1, 2, 3], [1, 2, 4], "[2]", "value"),
        ("abc", "abd", "", "value"),
        (b"abc", b"abd", "", "value"),
        (True, False, "", "value"),
        (np.int64(7), np.int64(8), "", "value"),
        ([0, [1, {"a": 2}]], [0, [1, {"a": 3}]], "[1][1]['a']", "value"),
        ({"a": 1, "b": 2}, {"a": 1}, "", "keys"),
        ({"a": 1}, {"a": 1, "c": 2}, "", "keys"),
        ([1, 2], [1, 2, 3], "", "count"),
        ((1,), (), "", "count"),
        ({1, 2}, {1, 3}, "", "value"),
        (collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1), "", "keys"),
        (Point(1.0, 2.0), Point(1.0, 2.5), "[1]", "value"),
        (Fit("a", 0.5), Fit("a", 0.6), ".loss", "value"),
        (Plain(a=1), Plain(a=2), ".a", "value"),
        (Plain(a=1), Plain(b=1), "", "keys"),
        (Opaque(1), Opaque(2), "", "value"),
        (ValueError("a"), ValueError("b"), ".(args)[0]", "value"),
        (fractions.Fraction(1, 3), fractions.Fraction(1, 4), "", "value"),
        (decimal.Decimal("1.0"), decimal.Decimal("1.1"), "", "value"),
        (np.array([1, 2, 3]), np.array([1, 2, 4]), "[2]", "value"),
        (np.array([[1, 2], [3, 4]]), np.array([[1, 2], [5, 4]]), "[1, 0]", "value"),
        (np.array(["a", "b"]), np.array(["a", "c"]), "[1]", "value"),
        (np.array([True, False]), np.array([True, True]), "[1]", "value"),
        (np.arange(6), np.arange(6).reshape(2, 3), "", "shape"),
        (np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64), "", "dtype"),
        (np.arange(3.0), np.arange(3.0, dtype=np.float32), "", "dtype"),
        (
            np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
            np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]),
            "['b'][0]",
            "value",
        ),
        (np.array([1, [2.0]], dtype=object), np.array([1, [2.5]], dtype=object), "[1][0]", "value"),
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), np.ma.masked_array([1.0, 2.0], mask=[0, 0]), "[1]", "value"),
        (np.array(["NaT"], "datetime64[s]"), np.array([0], "datetime64[s]"), "[0]", "value"),
        (np.void(b"\x01\x02"), np.void(b"\x01\x03"), "[1]", "value"),
    ],
    ids=repr,
)
def test_a_difference_is_found_where_it_is(expected: Any, actual: Any, path: str, reason: str) -> None:
    found = compare(expected, actual)
    assert isinstance(found, Mismatch)
    assert (found.path, found.reason) == (path, reason), found
    assert str(found).startswith(path or "the value")
    assert digest(expected) != digest(actual)


def test_values_under_a_mask_do_not_count() -> None:
    a = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    b = np.ma.masked_array([1.0, 99.0, 3.0], mask=[False, True, False])
    assert compare(a, b) is None
    assert digest(a) == digest(b)
    huge = np.ma.masked_array([1.0, 1e300, 3.0], mask=[False, True, False])  # nor widen the tolerance
    off = np.ma.masked_array([1.0, 1e300, 3.1], mask=[False, True, False])
    assert compare(huge, off).path == "[2]"
    s = np.ma.masked_array(np.array([(1, 2.0), (3, 4.0)], "i4,f8"), mask=[(0, 0), (1, 1)])
    assert compare(s, s.copy()) is None and digest(s) == digest(s.copy())


def test_an_unpicklable_object_without_eq_says_it_cannot_be_compared() -> None:
    found = compare(Unpicklable(), Unpicklable())
    assert found is not None and found.reason == "uncomparable"
    assert len(digest(Unpicklable())) == 32


def test_cycles_terminate() -> None:
    a: list = [1.0]
    a.append(a)
    b: list = [1.0]
    b.append(b)
    assert compare(a, b) is None
    assert digest(a) == digest(b)
    c: list = [2.0]
    c.append(c)
    assert compare(a, c) is not None and digest(a) != digest(c)


def test_a_dict_in_another_insertion_order_is_the_same_value() -> None:
    a = {"x": 1.0, "y": [1, 2]}
    b = {"y": [1, 2], "x": 1.0}
    assert compare(a, b) is None
    assert digest(a) == digest(b)
    assert digest({1, 2, 3}) == digest({3, 2, 1})


def test_a_liar_cannot_shift_structure_between_levels() -> None:
    pairs = [([1, [2]], [[1], 2]), ((1, 2), (12,)), ("ab", "a"), (b"", ""), ({"a": "b"}, {"ab": ""})]
    for expected, actual in pairs:
        assert compare(expected, actual) is not None
        assert digest(expected) != digest(actual)


# ---------------------------------------------------------------------------- floating point


@pytest.mark.parametrize("kind", [float, np.float64, np.float32, np.float16, complex, np.complex64])
def test_nan_equals_nan_and_infinities_only_their_own_sign(kind: type) -> None:
    nan, inf = kind(float("nan")), kind(float("inf"))
    assert compare(nan, kind(float("nan"))) is None
    assert compare(inf, kind(float("inf"))) is None
    assert compare(kind(-float("inf")), kind(-float("inf"))) is None
    assert compare(inf, kind(-float("inf"))) is not None
    assert compare(inf, kind(1e4)) is not None
    assert compare(nan, kind(1.0)) is not None
    assert compare(kind(1.0), nan) is not None
    assert digest(kind(0.0)) == digest(kind(-0.0))


def test_nan_and_infinity_in_arrays() -> None:
    a = np.array([1.0, np.nan, np.inf, -np.inf])
    assert compare(a, a.copy()) is None
    assert digest(a) == digest(np.array([1.0, -np.nan, np.inf, -np.inf]))
    assert compare(a, np.array([1.0, np.nan, -np.inf, -np.inf])).path == "[2]"
    assert compare(a, np.array([1.0, 0.0, np.inf, -np.inf])).path == "[1]"
    z = np.array([complex(np.nan, 1.0), complex(1.0, np.inf)])
    assert compare(z, z.copy()) is None
    assert compare(z, np.array([complex(np.nan, 2.0), complex(1.0, np.inf)])).path == "[0]"
    assert compare(z, np.array([complex(1.0, np.nan), complex(1.0, np.inf)])).path == "[0]"


def test_the_defaults_and_explicit_tolerances() -> None:
    assert default_tolerances(np.float64) == (DEFAULT_RTOL, DEFAULT_ATOL) == (1e-5, 1e-8)
    assert default_tolerances(np.complex128) == (1e-5, 1e-8)
    rtol32, atol32 = default_tolerances(np.float32)
    assert rtol32 == atol32 == pytest.approx(math.sqrt(np.finfo(np.float32).eps))
    assert default_tolerances(np.complex64) == (rtol32, atol32)
    assert default_tolerances(np.float16)[0] == pytest.approx(math.sqrt(np.finfo(np.float16).eps))
    assert compare(1.0, 1.0 + 5e-6) is None
    assert compare(1.0, 1.0 + 2e-5) is not None
    assert compare(0.0, 5e-9) is None and compare(0.0, 5e-8) is not None
    assert compare(np.float32(1.0), np.float32(1.0002)) is None
    assert compare(1.0, 1.0 + 5e-6, rtol=1e-7) is not None  # explicit: used for every dtype
    assert compare(np.float32(1.0), np.float32(1.0002), rtol=1e-6, atol=0) is not None
    assert compare(1.0, 1.5, rtol=0.5) is None
    for bad in (-1e-3, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="rtol"):
            compare(1.0, 1.0, rtol=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="atol"):
            compare(1.0, 1.0, atol=bad)  # type: ignore[arg-type]


def test_the_verdict_does_not_depend_on_which_result_is_expected() -> None:
    """Symmetric closeness: a referee compares three results pairwise, in any order."""
    rng = np.random.default_rng(7)
    for _ in range(2000):
        a = float(rng.standard_normal() * 10.0 ** rng.integers(-10, 10))
        b = a * (1 + float(rng.standard_normal()) * 10.0 ** float(rng.uniform(-7, -3)))
        if rng.random() < 0.2:
            b += float(rng.standard_normal()) * 1e-8
        assert (compare(a, b) is None) == (compare(b, a) is None), (a, b)
        x, y = np.array([a], np.float32), np.array([b], np.float32)
        assert (compare(x, y) is None) == (compare(y, x) is None), (a, b)


def _sums(terms: np.ndarray) -> list[float]:
    """The same sum in several honest orders."""
    values = terms.tolist()
    pairwise = float(np.sum(terms))  # NumPy's pairwise summation
    chunks = np.array_split(terms, 7)
    by_chunks = sum((float(np.sum(c)) for c in reversed(chunks)), 0.0)
    shuffled = values[:]
    random.Random(len(values)).shuffle(shuffled)
    return [pairwise, math.fsum(values), sum(values), sum(reversed(values)), by_chunks, sum(shuffled)]


def test_honest_float64_sums_in_other_orders_pass() -> None:
    rng = np.random.default_rng(1)
    for case in range(CASES):
        n = int(rng.integers(2, 20_000))
        kind = case % 3
        if kind == 0:
            terms = rng.standard_normal(n)
        elif kind == 1:
            terms = rng.exponential(1.0, n) * 10.0 ** rng.integers(-6, 6)
        else:
            terms = rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-3, 3, n)
        sums = _sums(terms)
        for s in sums[1:]:
            assert compare(sums[0], s) is None, (case, n, sums)
        parts = np.array(sums)
        assert compare(parts, parts[::-1].copy()) is None
        assert compare(np.float64(sums[0]), np.float64(sums[1])) is None


def _blocked_matmul(a: np.ndarray, b: np.ndarray, block: int, reverse: bool) -> np.ndarray:
    """``a @ b`` as a sum of partial products over blocks of the inner dimension: what another
    BLAS blocking or another number of threads computes."""
    k = a.shape[1]
    starts = list(range(0, k, block))
    if reverse:
        starts.reverse()
    out = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    for s in starts:
        out += a[:, s : s + block] @ b[s : s + block, :]
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128, np.complex64])
def test_honest_matrix_products_blocked_differently_pass(dtype: type) -> None:
    rng = np.random.default_rng(2)
    for case in range(CASES // 5):
        m, k, n = (int(x) for x in rng.integers(1, 48, 3))
        k = int(rng.integers(1, 600))
        a = rng.standard_normal((m, k)) * 10.0 ** float(rng.uniform(-3, 6))
        b = rng.standard_normal((k, n))
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal((m, k))
            b = b - 1j * rng.standard_normal((k, n))
        a, b = a.astype(dtype), b.astype(dtype)
        reference = a @ b
        for block, reverse in ((1, False), (7, True), (64, False), (max(1, k // 2), True)):
            other = _blocked_matmul(a, b, block, reverse)
            assert compare(reference, other) is None, (case, k, block, compare(reference, other))
        if np.dtype(dtype).itemsize <= 8:  # a single-precision result next to the double one cast down
            wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
            cast = (a.astype(wide) @ b.astype(wide)).astype(dtype)
            assert compare(reference, cast) is None, (case, k, compare(reference, cast))


def test_honest_float32_reductions_next_to_float64_cast_down_pass() -> None:
    rng = np.random.default_rng(3)
    for case in range(CASES):
        n = int(rng.integers(1, 50_000))
        x = (rng.standard_normal(n) * 10.0 ** float(rng.uniform(-3, 3))).astype(np.float32)
        for reduce in (np.sum, np.mean, lambda v: np.dot(v, v), lambda v: np.cumsum(v)[-1]):
            single = np.float32(reduce(x))
            double = np.float32(reduce(x.astype(np.float64)))
            assert compare(single, double) is None, (case, n, single, double)
        # elementwise math from another library (another libm, a GPU): a few ulps
        y = np.abs(x[:1000]) + np.float32(1)
        for f in (np.exp, np.log, np.sqrt, np.sin):
            with np.errstate(over="ignore"):
                single, double = f(y), f(y.astype(np.float64)).astype(np.float32)
            assert compare(single, double) is None


# ---------------------------------------------------------------------------- a liar's corruptions


def _random_result(rng: np.random.Generator) -> Any:
    return {
        "count": int(rng.integers(0, 1000)),
        "mean": float(rng.standard_normal()) * 100,
        "xs": (rng.standard_normal(int(rng.integers(2, 200))) * 10.0 ** float(rng.uniform(-2, 3))),
        "labels": ["a", "b", "c"],
        "grid": rng.integers(0, 100, (4, 5)),
    }


def _corruptions(value: dict, rng: np.random.Generator) -> list[tuple[dict, str]]:
    xs = value["xs"]
    i = int(rng.choice(np.flatnonzero(np.abs(xs) >= 1e-3 * np.abs(xs).max())))
    scaled = xs.copy()
    scaled[i] *= 1.001
    flipped = xs.copy()
    flipped[i] = -flipped[i]
    grid = value["grid"].copy()
    grid[int(rng.integers(0, 4)), int(rng.integers(0, 5))] += 1
    dropped = dict(value)
    del dropped["labels"]
    return [
        ({**value, "count": value["count"] + 1}, "['count']"),
        ({**value, "mean": value["mean"] * 1.001}, "['mean']"),
        ({**value, "xs": scaled}, f"['xs'][{i}]"),
        ({**value, "xs": flipped}, f"['xs'][{i}]"),
        ({**value, "xs": xs[:-1].copy()}, "['xs']"),
        ({**value, "xs": xs.astype(np.float32)}, "['xs']"),
        ({**value, "grid": grid}, "['grid']"),
        ({**value, "labels": ["a", "b", "d"]}, "['labels'][2]"),
        (dropped, ""),
    ]


def test_a_liars_typical_corruptions_are_flagged() -> None:
    rng = np.random.default_rng(4)
    for _ in range(CASES):
        honest = _random_result(rng)
        again = {**honest, "xs": honest["xs"] * (1 + 1e-13)}  # and honest noise passes
        assert compare(honest, again) is None
        for lie, where in _corruptions(honest, rng):
            found = compare(honest, lie)
            assert found is not None and found.path.startswith(where), (where, found)
            assert digest(honest) != digest(lie)


def test_a_float32_arrays_corrupted_elements_are_flagged_near_its_scale() -> None:
    """float32 is checked to half its digits: an element scaled by 1.001 is flagged when it is
    near the array's largest magnitude, a flipped sign anywhere but near zero."""
    rng = np.random.default_rng(5)
    for _ in range(CASES):
        x = (rng.uniform(1, 1000, int(rng.integers(1, 500))) * rng.choice([-1, 1])).astype(np.float32)
        big = int(rng.choice(np.flatnonzero(np.abs(x) >= 0.8 * np.abs(x).max())))
        scaled = x.copy()
        scaled[big] *= np.float32(1.001)
        assert compare(x, scaled).path == f"[{big}]"
        i = int(rng.choice(np.flatnonzero(np.abs(x) >= 1e-2 * np.abs(x).max())))
        flipped = x.copy()
        flipped[i] = -flipped[i]
        assert compare(x, flipped).path == f"[{i}]"
        assert compare(x, x * np.float32(1.001)) is not None  # the whole array scaled


def test_explicit_tolerances_have_no_scale_term() -> None:
    x = np.array([1000.0, 1e-3])
    near = np.array([1000.0, 1.01e-3])
    assert compare(x, near) is None  # within 1.5e-8 * 1000 of the largest
    assert compare(x, near, rtol=1e-5, atol=1e-8).path == "[1]"
    assert compare(np.array([1.0, 2.0]), np.array([1.0, 2.0]), rtol=0, atol=0) is None
    assert compare(np.array([1.0]), np.array([np.nextafter(1.0, 2.0)]), rtol=0, atol=0) is not None


def test_digests_are_32_bytes_and_equal_exactly_when_values_are() -> None:
    rng = np.random.default_rng(6)
    seen: dict[bytes, Any] = {}
    for _ in range(200):
        value = _random_result(rng)
        d = digest(value)
        assert len(d) == 32 and d not in seen
        seen[d] = value
        strided = np.repeat(value["xs"], 2)[::2]  # not contiguous, same values
        assert digest({**value, "xs": strided}) == d
        assert digest({**value, "xs": value["xs"] * (1 + 1e-13)}) != d or not value["xs"].any()
    assert digest(1) != digest(True) != digest(1.0) != digest(np.int64(1)) != digest("1")
    assert digest([1]) != digest((1,)) != digest({1})
    assert digest(np.zeros(6)) != digest(np.zeros((2, 3))) != digest(np.zeros(6, np.float32))
