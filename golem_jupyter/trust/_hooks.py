"""Make distributed decode provider bytes with the restricted decoder, in the requestor process.

The requestor process is the Jupyter kernel: its Dask client receives results, exceptions and
events that workers on provider machines produced. The Dask scheduler runs in a separate
process (see :mod:`golem_jupyter.scheduler`), so the graphs the client pickles are never decoded here and
every pickle decoded in this process comes, directly or through the scheduler, from workers.
:func:`install` therefore replaces every place where distributed unpickles in this process:

1. ``distributed.protocol.pickle.loads``. Every unpickle in distributed that can see provider
   bytes goes through this module attribute, looked up at call time
   (``from distributed.protocol import pickle`` then ``pickle.loads(...)``):

   - protocol/core.py ``loads``: ``__Pickled__`` frames (``ToPickle``);
   - protocol/serialize.py: ``pickle_loads`` (the 'pickle' family), ``dask_loads`` (the
     'dask' family unpickles ``header["type-serialized"]`` before dispatching on it, so only
     allowlisted types reach a ``dask_deserialize`` function), ``ObjectDictSerializer``;
   - protocol/numpy.py: object-dtype arrays (``header["pickle"]``), custom dtypes, masked
     array fill values; protocol/cuda.py ``cuda_loads`` (``type-serialized`` again);
   - core.py ``clean_exception`` and ``error_message`` (remote exceptions and tracebacks).

   Modules that bound the function at import (``from distributed.protocol.pickle import
   loads``: client.py, which uses it for ``future.type`` and for ``Client.run``'s pickled
   errors, and scheduler.py) are patched too: every loaded ``distributed`` module whose
   attribute is the original function gets the replacement.
2. The standard ``pickle`` module as distributed's modules imported it: client.py calls
   ``pickle.loads`` on "warn" events sent by workers (``_handle_warn``), which bypasses (1).
   In every loaded distributed module whose ``pickle`` attribute is the standard module
   (client.py; scheduler.py, shuffle/_core.py, shuffle/_pickle.py and utils.py, which do not
   decode provider bytes in this process; protocol/pickle.py, whose ``loads`` is replaced
   anyway), it becomes a copy of the module whose ``loads`` is restricted.
3. ``clean_exception`` (distributed/core.py, and the copies imported into client.py,
   diagnostics/progressbar.py, shuffle/*, scheduler.py, utils_test.py): distributed turns a
   decode failure into ``Exception(bytes)``; the wrapper turns a *refused* exception type
   into :class:`~golem_jupyter.trust.RemoteTaskError` with the type's name, message and traceback text.
4. NumPy arrays in the 'dask' family do not go through pickle for their data:
   ``deserialize_numpy_ndarray`` builds ``np.ndarray(shape, dtype, buffer=frame)`` with the
   dtype string from the header, and NumPy accepts ``'O'`` there, turning provider bytes into
   object pointers. The registration for ``np.ndarray`` (and any subclass cache entry
   pointing at it) is replaced by a guard that refuses object dtypes and then calls the
   original.
5. ``distributed.protocol.serialize.import_allowed_module``: msgpack messages may carry
   ``__Enum__`` values that make the receiver *import* a module by name (limited to the
   ``distributed.scheduler.allowed-imports`` roots, dask and distributed). The replacement only
   returns modules that are already imported.
6. Not a decoding step, but part of receiving from providers: every client's gather asks the
   scheduler, never a worker directly (``_gathering.py``): the scheduler holds each copy of a
   verified result to its worker's commitment.

The cloudpickle paths: distributed pickles with cloudpickle, but cloudpickle's output is a
normal pickle and distributed never calls ``cloudpickle.loads``; it unpickles through (1).
The 'pickle' and 'dask' families and ``dask_deserialize`` for NumPy are covered by (1) and
(4); 'msgpack' does not unpickle; 'error' only raises a TypeError with the sender's text.

How this was checked: grep of site-packages/distributed (2026.8.0) for ``pickle.loads``,
``loads(``, ``import pickle``, ``import cloudpickle``, ``Unpickler`` and ``clean_exception``,
reading each hit; tests/test_decoder.py repeats the audit (distributed source files that
unpickle with the standard pickle must be the known ones, and no loaded distributed module may
still hold the original functions after install) and runs a real scheduler and worker.

What this does not cover, on purpose: standard ``pickle.loads`` in scheduler.py and shuffle/
(they run in the scheduler and worker processes, not here). Consequences to know: with the
decoder installed, an in-process worker or scheduler (``LocalCluster(processes=False)``) in
this process cannot unpickle the client's functions; ``error_message`` in this process
replaces an exception the decoder would refuse by ``Exception(repr(e))``; data published to
the scheduler comes back through the decoder like any result.
"""

from __future__ import annotations

import importlib
import pickle as std_pickle
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
import numpy as np

from . import _gathering
from ._errors import UnsafePayload
from ._reader import decode_exception, restricted_loads

__all__ = ["hold", "install", "installed", "is_installed", "release", "uninstall"]

_lock = threading.Lock()
_undo: list[Callable[[], None]] | None = None


def _distributed_modules() -> list[types.ModuleType]:
    return [
        module
        for name, module in list(sys.modules.items())
        if (name == "distributed" or name.startswith("distributed.")) and isinstance(module, types.ModuleType)
    ]


def _swap_everywhere(original: object, replacement: object, attribute: str) -> Callable[[], None]:
    """Replace ``module.attribute`` in every loaded distributed module where it is ``original``.

    The undo scans again, so a module imported after install (which copied the replacement)
    gets the original back too.
    """
    for module in _distributed_modules():
        if vars(module).get(attribute) is original:
            setattr(module, attribute, replacement)

    def undo() -> None:
        for module in _distributed_modules():
            if vars(module).get(attribute) is replacement:
                setattr(module, attribute, original)

    return undo


def _restricted_distributed_loads(x: Any, *, buffers: Iterable[Any] = ()) -> Any:
    """Drop-in for ``distributed.protocol.pickle.loads``."""
    return restricted_loads(x, buffers=buffers)


def _restricted_pickle_module() -> types.ModuleType:
    """The standard pickle module as distributed's modules will see it: ``loads`` is restricted."""
    module = types.ModuleType("pickle", "The standard pickle module, with loads replaced by the restricted decoder.")
    module.__dict__.update({k: v for k, v in vars(std_pickle).items() if not k.startswith("__")})
    module.loads = restricted_loads  # type: ignore[attr-defined]
    return module


def _clean_exception_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    def clean_exception(exception: Any, traceback: Any = None, **kwargs: Any) -> Any:
        """distributed's clean_exception, decoding with the restricted decoder.

        A refused exception type becomes RemoteTaskError instead of ``Exception(bytes)``.
        """
        if isinstance(exception, (bytes, bytearray)):
            try:
                rebuilt, tb = decode_exception(
                    exception,
                    traceback,
                    exception_text=kwargs.get("exception_text"),
                    traceback_text=kwargs.get("traceback_text"),
                )
            except Exception:  # noqa: BLE001 (malformed bytes: distributed's own fallback applies)
                return original(exception, traceback, **kwargs)
            return type(rebuilt), rebuilt, tb
        return original(exception, traceback, **kwargs)

    clean_exception.__wrapped__ = original  # type: ignore[attr-defined]
    return clean_exception


def _numpy_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def deserialize_numpy_ndarray(header: dict[str, Any], frames: list[Any]) -> Any:
        """distributed's NumPy deserializer, refusing object dtypes before building the array."""
        if not header.get("pickle"):  # the pickled form goes through the restricted decoder
            is_custom, dt = header["dtype"]
            dtype = restricted_loads(dt) if is_custom else np.dtype(dt)
            if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind == "O":
                raise UnsafePayload(
                    "numpy.ndarray[object]", "NumPy arrays of object dtype hold Python objects, which are refused"
                )
        return original(header, frames)

    deserialize_numpy_ndarray.__wrapped__ = original  # type: ignore[attr-defined]
    return deserialize_numpy_ndarray


def _guard_numpy_deserializer() -> Callable[[], None]:
    serialize = importlib.import_module("distributed.protocol.serialize")
    numpy_protocol = importlib.import_module("distributed.protocol.numpy")  # registers the original
    original = numpy_protocol.deserialize_numpy_ndarray
    guarded = _numpy_guard(original)
    lookup = serialize.dask_deserialize._lookup
    patched = [cls for cls, function in lookup.items() if function is original]
    for cls in patched:
        lookup[cls] = guarded

    def undo() -> None:
        for cls, function in list(lookup.items()):
            if function is guarded:
                lookup[cls] = original

    return undo


def _import_loaded_module(name: str) -> types.ModuleType:
    """Replacement for distributed's ``import_allowed_module``: never imports."""
    root = name.split(".", 1)[0]
    module = sys.modules.get(name)
    if module is None or not root or root not in dask.config.get("distributed.scheduler.allowed-imports"):
        raise UnsafePayload(name, "a message asked to import this module")
    return module


def install() -> None:
    """Route every unpickle distributed does in this process through the restricted decoder.

    Idempotent. Call it before the client receives anything from providers.
    """
    global _undo
    with _lock:
        if _undo is not None:
            return
        protocol_pickle = importlib.import_module("distributed.protocol.pickle")
        serialize = importlib.import_module("distributed.protocol.serialize")
        core = importlib.import_module("distributed.core")
        importlib.import_module("distributed.client")  # so that the scans below reach it

        undo: list[Callable[[], None]] = []
        try:
            undo.append(_swap_everywhere(protocol_pickle.loads, _restricted_distributed_loads, "loads"))
            original_clean = core.clean_exception
            undo.append(_swap_everywhere(original_clean, _clean_exception_wrapper(original_clean), "clean_exception"))
            undo.append(_swap_everywhere(std_pickle, _restricted_pickle_module(), "pickle"))
            undo.append(
                _swap_everywhere(serialize.import_allowed_module, _import_loaded_module, "import_allowed_module")
            )
            undo.append(_guard_numpy_deserializer())
            if not _gathering.is_routed():
                _gathering.route_through_the_scheduler()
                undo.append(_gathering.let_clients_gather_directly)
        except BaseException:
            for step in reversed(undo):
                step()
            raise
        _undo = undo


def uninstall() -> None:
    """Give distributed its own functions back. Idempotent."""
    global _undo
    with _lock:
        if _undo is None:
            return
        for step in reversed(_undo):
            step()
        _undo = None


def is_installed() -> bool:
    return _undo is not None


@contextmanager
def installed() -> Iterator[None]:
    """The restricted decoder installed for the block; left as found afterwards."""
    was_installed = is_installed()
    install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()


_holders = 0


def hold() -> None:
    """Install the decoder for one more user (a market session); it stays while any holds it."""
    global _holders
    with _lock:
        _holders += 1
    install()


def release() -> None:
    """One user is done with the decoder; the last one out uninstalls it."""
    global _holders
    with _lock:
        _holders -= 1
        last = _holders == 0
    if last:
        uninstall()
