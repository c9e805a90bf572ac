"""NumPy objects that come back from providers rebuilt from plain data: generators, series, masked and record arrays.

A cell that draws from ``rng = np.random.default_rng(seed)``, fits an ``np.polynomial`` series or
masks an array leaves those objects in the notebook; they come back through the restricted decoder
like any result. NumPy's own pickles rebuild them by calling constructors a pickle names (and
masked arrays through ``ndarray.__setstate__`` with a class of the pickle's choosing), so providers
write them differently (:data:`REDUCERS`, used by the pickler in
:mod:`golem_jupyter.notebook.transport`): as calls to the functions of this module, with data only:

* a bit generator (PCG64, PCG64DXSM, MT19937, Philox, SFC64) as its class *name*, checked against
  :data:`BIT_GENERATORS`, its ``state`` dict, checked to hold only ints, strings, lists of ints and
  dicts of those, and its ``SeedSequence`` (entropy, spawn key, pool size, children spawned: ints);
* a ``Generator`` or ``RandomState`` as the bit generator it draws from (and the legacy Gaussian
  cache of a ``RandomState``);
* a series (Polynomial, Chebyshev, Legendre, Hermite, HermiteE, Laguerre) as its kind's name and its
  coefficient, domain and window arrays and symbol;
* a masked array as its data, mask and fill value, and ``np.ma.masked`` as itself;
* a record array (``np.recarray``) as its data, a plain array (structured where its fields are), and
  an ``np.record`` (an item of one) as a 0-d structured array.

:func:`numpy_state_rules` gives the decoder's rules for these functions (``_rules`` adds them to its
static allowlist). Nothing here calls anything a provider chose: every name is looked up in a fixed
allowlist, and arrays arrive as plain ``numpy.ndarray`` of non-object dtype (the decoder refuses the
others before they get here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._rules import _function, _refuse, _Rule

__all__ = [
    "BIT_GENERATORS",
    "REDUCERS",
    "SERIES",
    "bit_generator",
    "generator",
    "masked_array",
    "masked_constant",
    "numpy_state_rules",
    "polynomial",
    "random_state",
    "record",
    "record_array",
    "seed_sequence",
]

BIT_GENERATORS: Mapping[str, type] = {
    cls.__name__: cls
    for cls in (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64)
}
"""The bit generators a ``Generator`` or ``RandomState`` may be rebuilt on, by class name."""
SERIES: Mapping[str, type] = {
    cls.__name__: cls
    for cls in (
        np.polynomial.Polynomial,
        np.polynomial.Chebyshev,
        np.polynomial.Legendre,
        np.polynomial.Hermite,
        np.polynomial.HermiteE,
        np.polynomial.Laguerre,
    )
}
"""The ``np.polynomial`` series, by class name."""

_MAX_INT_BITS = 256  # PCG64's state and increment are 128-bit
_MAX_LIST = 1024  # MT19937's key has 624 words
_MAX_KEYS = 16
_MAX_DEPTH = 4
_MAX_TEXT = 64


def _state(value: object, depth: int = 0) -> Any:
    """A copy of ``value`` if it is plain state: ints, floats, strings, lists of ints, dicts of those."""
    kind = type(value)
    if depth > _MAX_DEPTH:
        raise _refuse("numpy.random state", "it is nested too deeply")
    if kind is bool or kind is float:
        return value
    if kind is int:
        if value.bit_length() > _MAX_INT_BITS:  # type: ignore[union-attr]
            raise _refuse("numpy.random state", "an integer in it is too large")
        return value
    if kind is str:
        if len(value) > _MAX_TEXT:  # type: ignore[arg-type]
            raise _refuse("numpy.random state", "a string in it is too long")
        return value
    if kind is list or kind is tuple:
        if len(value) > _MAX_LIST:  # type: ignore[arg-type]
            raise _refuse("numpy.random state", "a list in it is too long")
        return [_integer(v) for v in value]  # type: ignore[union-attr]
    if kind is dict:
        if len(value) > _MAX_KEYS or not all(type(k) is str and len(k) <= _MAX_TEXT for k in value):  # type: ignore[arg-type]
            raise _refuse("numpy.random state", "its keys are not short strings")
        return {k: _state(v, depth + 1) for k, v in value.items()}  # type: ignore[union-attr]
    raise _refuse(f"numpy.random state holding {kind.__qualname__}", "only ints, strings, lists and dicts are")


def _integer(value: object, *, low: int = 0, bits: int = _MAX_INT_BITS) -> int:
    if type(value) is not int or value < low or value.bit_length() > bits:
        raise _refuse("numpy.random state", "an integer was expected")
    return value


def _array(value: object, what: str, *, ndim: int | None = None) -> np.ndarray:
    if type(value) is not np.ndarray or value.dtype.hasobject:
        raise _refuse(f"{what} of type {type(value).__qualname__}", "a NumPy array of plain values was expected")
    if ndim is not None and value.ndim != ndim:
        raise _refuse(what, f"an array of {ndim} dimension(s) was expected")
    return value


# ---------------------------------------------------------------------------- random generators


def seed_sequence(entropy: object, spawn_key: object, pool_size: object, n_children_spawned: object) -> Any:
    """``np.random.SeedSequence`` from its entropy (an int or a list of ints), spawn key and counters."""
    if type(entropy) is list or type(entropy) is tuple:
        if len(entropy) > _MAX_LIST:
            raise _refuse("numpy.random.SeedSequence", "its entropy is too long")
        entropy = [_integer(e) for e in entropy]
    else:
        entropy = _integer(entropy)
    if (type(spawn_key) is not tuple and type(spawn_key) is not list) or len(spawn_key) > _MAX_LIST:
        raise _refuse("numpy.random.SeedSequence", "its spawn key must be a short tuple of ints")
    key = tuple(_integer(k) for k in spawn_key)
    size = _integer(pool_size, bits=8)
    if not 4 <= size <= 64:
        raise _refuse("numpy.random.SeedSequence", "its pool size is out of range")
    children = _integer(n_children_spawned, bits=63)
    return np.random.SeedSequence(entropy, spawn_key=key, pool_size=size, n_children_spawned=children)


def bit_generator(name: object, state: object, seed: object) -> Any:
    """A bit generator of the allowlisted class ``name``, with ``state`` and its ``SeedSequence`` (or None)."""
    cls = BIT_GENERATORS.get(name) if type(name) is str else None  # type: ignore[call-overload]
    if cls is None:
        raise _refuse(f"numpy.random.{name}" if type(name) is str else "numpy.random bit generator", "not allowlisted")
    if seed is not None and type(seed) is not np.random.SeedSequence:
        raise _refuse(type(seed).__qualname__, "a numpy.random.SeedSequence was expected")
    plain = _state(state)
    if type(plain) is not dict or plain.get("bit_generator") != name:
        raise _refuse(f"numpy.random.{name}", "its state names another bit generator")
    if seed is None:
        rebuilt = cls(0)
        if hasattr(rebuilt, "_legacy_seeding"):
            rebuilt._legacy_seeding(0)  # no SeedSequence, like RandomState's own
    else:
        rebuilt = cls(seed)
    try:
        rebuilt.state = plain
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as error:
        raise _refuse(f"numpy.random.{name}", f"its state is malformed ({error})") from None
    return rebuilt


def generator(bits: object) -> np.random.Generator:
    """``np.random.Generator`` drawing from ``bits`` (rebuilt by :func:`bit_generator`)."""
    if type(bits) not in BIT_GENERATORS.values():
        raise _refuse(type(bits).__qualname__, "an allowlisted bit generator was expected")
    return np.random.Generator(bits)  # type: ignore[arg-type]


def random_state(bits: object, has_gauss: object, gauss: object) -> np.random.RandomState:
    """``np.random.RandomState`` drawing from ``bits``, with its cached Gaussian."""
    if type(bits) not in BIT_GENERATORS.values():
        raise _refuse(type(bits).__qualname__, "an allowlisted bit generator was expected")
    if type(has_gauss) is not int or has_gauss not in (0, 1) or type(gauss) is not float:
        raise _refuse("numpy.random.RandomState", "its Gaussian cache is malformed")
    rebuilt = np.random.RandomState(bits)  # type: ignore[arg-type]
    state = dict(bits.state)  # type: ignore[attr-defined]
    state.update(has_gauss=has_gauss, gauss=gauss)
    rebuilt.set_state(state)
    return rebuilt


# ---------------------------------------------------------------------------- series and masked arrays


def polynomial(kind: object, coef: object, domain: object, window: object, symbol: object) -> Any:
    """A series of the allowlisted class ``kind``; ``domain`` and ``window`` None for the class's own."""
    cls = SERIES.get(kind) if type(kind) is str else None  # type: ignore[call-overload]
    if cls is None:
        raise _refuse(f"numpy.polynomial.{kind}" if type(kind) is str else "numpy.polynomial series", "not allowlisted")
    coef = _array(coef, "a series' coefficients", ndim=1)
    ends = [None if v is None else _array(v, "a series' domain or window", ndim=1) for v in (domain, window)]
    if any(v is not None and v.shape != (2,) for v in ends) or type(symbol) is not str or not symbol.isidentifier():
        raise _refuse(f"numpy.polynomial.{kind}", "its domain, window or symbol is malformed")
    rebuilt = cls(coef, domain=ends[0], window=ends[1], symbol=symbol)
    rebuilt.coef = coef  # exactly the sent array (the constructor may change its dtype)
    return rebuilt


def masked_array(data: object, mask: object, fill_value: object, hard_mask: object) -> np.ma.MaskedArray:
    """``np.ma.MaskedArray`` from its data, its mask (None: ``nomask``), fill value (None: unset) and hardness."""
    data = _array(data, "a masked array's data")
    if mask is not None:
        mask = _array(mask, "a masked array's mask")
        if mask.shape != data.shape or mask.dtype != np.ma.make_mask_descr(data.dtype):
            raise _refuse("numpy.ma.MaskedArray", "its mask does not fit its data")
    if fill_value is not None:
        fill_value = _array(fill_value, "a masked array's fill value", ndim=0)
    if type(hard_mask) is not bool:
        raise _refuse("numpy.ma.MaskedArray", "its hard_mask flag is malformed")
    return np.ma.MaskedArray(
        data,
        mask=np.ma.nomask if mask is None else mask,
        fill_value=fill_value,
        hard_mask=hard_mask,
        copy=False,
        shrink=mask is None,  # keep an all-False mask that was sent as an array
    )


def masked_constant() -> Any:
    """``np.ma.masked``, the masked constant (a singleton)."""
    return np.ma.masked


def record_array(data: object) -> np.recarray:
    """``np.recarray`` viewing ``data``, a plain array (a structured one's fields become attributes)."""
    return _array(data, "a record array's data").view(np.recarray)


def record(data: object) -> np.record:
    """An ``np.record`` (an item of a record array) from its data, a 0-d structured array."""
    data = _array(data, "a record's data", ndim=0)
    if data.dtype.names is None:
        raise _refuse("numpy.record", "its data must be a structured array")
    return data.view(np.recarray)[()]


# ---------------------------------------------------------------------------- both directions


def numpy_state_rules() -> dict[tuple[str, str], _Rule]:
    """The restricted decoder's rules for this module's functions (each checks its arguments)."""
    functions = (
        seed_sequence, bit_generator, generator, random_state, polynomial, masked_array, masked_constant, record_array,
        record,
    )  # fmt: skip
    return {(__name__, f.__name__): _function(f"{__name__}.{f.__name__}", f) for f in functions}


def _plain(value: Any) -> Any:
    """A bit generator's state with its arrays as lists of ints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [int(v) for v in value.ravel()]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _reduce_seed_sequence(seed: np.random.SeedSequence) -> tuple[Any, ...]:
    entropy = seed.entropy
    if not isinstance(entropy, int):
        entropy = [int(e) for e in np.asarray(entropy).ravel()]
    spawn_key = tuple(int(k) for k in seed.spawn_key)
    return seed_sequence, (entropy, spawn_key, int(seed.pool_size), int(seed.n_children_spawned))


def _reduce_bit_generator(bits: Any) -> tuple[Any, ...]:
    seed = getattr(bits, "_seed_seq", None)
    seed = seed if type(seed) is np.random.SeedSequence else None
    return bit_generator, (type(bits).__name__, _plain(bits.state), seed)


def _reduce_random_state(rs: np.random.RandomState) -> tuple[Any, ...]:
    state = rs.get_state(legacy=False)
    return random_state, (rs._bit_generator, int(state["has_gauss"]), float(state["gauss"]))


def _reduce_series(series: Any) -> tuple[Any, ...]:
    own = vars(series)
    ends = [np.asarray(own[k]) if k in own else None for k in ("domain", "window")]
    return polynomial, (type(series).__name__, np.asarray(series.coef), *ends, str(series.symbol))


def _reduce_masked(array: np.ma.MaskedArray) -> tuple[Any, ...]:
    mask = None if array._mask is np.ma.nomask else np.asarray(array._mask)
    fill = None if array._fill_value is None else np.asarray(array._fill_value)
    return masked_array, (np.asarray(array.data), mask, fill, bool(array._hardmask))


def _plain_array(array: np.ndarray) -> np.ndarray:
    """The array as a plain ``numpy.ndarray``, a dtype of ``np.record`` items as the plain structured dtype."""
    plain = array.view(np.ndarray)
    return plain.view(np.dtype((np.void, plain.dtype))) if plain.dtype.type is np.record else plain


REDUCERS: Mapping[type, Callable[[Any], tuple[Any, ...]]] = {
    np.random.Generator: lambda g: (generator, (g.bit_generator,)),
    np.random.RandomState: _reduce_random_state,
    np.random.SeedSequence: _reduce_seed_sequence,
    np.ma.MaskedArray: _reduce_masked,
    type(np.ma.masked): lambda _: (masked_constant, ()),
    np.recarray: lambda a: (record_array, (_plain_array(a),)),
    np.record: lambda r: (record, (_plain_array(np.array(r)),)),
    **dict.fromkeys(BIT_GENERATORS.values(), _reduce_bit_generator),
    **dict.fromkeys(SERIES.values(), _reduce_series),
}
"""How a provider pickles these objects (by exact type): as calls to this module's functions, with data."""
