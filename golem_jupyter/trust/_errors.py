"""What the trust boundary raises: a refused payload, and a remote exception it would not rebuild."""

from __future__ import annotations

from typing import Any

from ..errors import GolemError


class UnsafePayload(GolemError, TypeError):
    """Provider bytes named something the restricted decoder does not rebuild.

    A :class:`TypeError` too, so that code which expects a decode failure to be a TypeError
    (distributed's ``clean_exception`` does, for tracebacks) treats it as one. ``source`` names
    the provider that sent the bytes, when the caller knows it.
    """

    def __init__(self, type_name: str, detail: str | None = None, source: str | None = None) -> None:
        self.type_name = type_name
        self.detail = detail
        self.source = source
        super().__init__(self._message())

    def _sender(self) -> str:
        return f"Provider {self.source}" if self.source else "A provider"

    def _message(self) -> str:
        message = (
            f"{self._sender()} sent an object of type {self.type_name}, which golem-jupyter does not rebuild from "
            "provider bytes (only plain values, NumPy arrays and classes defined in your notebook are)."
        )
        if self.detail:
            message += f" {self.detail}."
        return message + " Return plain data from the task instead."

    def with_source(self, source: str | None) -> UnsafePayload:
        """Name the provider in the message, unless it already names one; returns self."""
        if source and not self.source:
            self.source = source
            self.args = (self._message(),)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.detail, self.source)


class PayloadTooLarge(UnsafePayload):
    """Provider bytes asked the decoder to allocate far more memory than they themselves hold.

    ``needed`` bytes would have been allocated (by what ``type_name`` names) on top of
    ``spent`` already allocated, against an allowance of ``allowed`` for the ``received``
    bytes of the result (see ``ALLOCATION_FACTOR`` and ``ALLOCATION_FLOOR`` in
    :mod:`golem_jupyter.trust._rules`).
    """

    def __init__(
        self, type_name: str, needed: int, allowed: int, received: int, source: str | None = None, spent: int = 0
    ) -> None:
        self.needed, self.allowed, self.received, self.spent = needed, allowed, received, spent
        super().__init__(type_name, None, source)

    def _message(self) -> str:
        return (
            f"{self._sender()} sent a result of {self.received:,} bytes that asks the decoder to allocate "
            f"{self.spent + self.needed:,} bytes ({self.type_name}); the decoder allocates at most {self.allowed:,} "
            "bytes beyond what a result holds, so that a few bytes cannot exhaust this machine's memory. "
            "Return plain data (values, lists, dicts, NumPy arrays) or smaller results from the task."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.needed, self.allowed, self.received, self.source, self.spent)


class PayloadTooDeep(UnsafePayload):
    """Provider bytes decoded to a value nested more than ``limit`` containers deep.

    Python recurses once per level when it prints, compares, hashes or frees such a value, and a
    deep enough one crashes the process; the limit is ``MAX_DEPTH`` in
    :mod:`golem_jupyter.trust._rules`.
    """

    def __init__(self, type_name: str, limit: int, source: str | None = None) -> None:
        self.limit = limit
        super().__init__(type_name, None, source)

    def _message(self) -> str:
        return (
            f"{self._sender()} sent a result nested more than {self.limit} levels deep (a {self.type_name} "
            "inside another, and so on); values that deep crash Python when printed, compared or freed, so the "
            "decoder refuses them (the limit is golem_jupyter.trust._rules.MAX_DEPTH). Return plain data with "
            "less nesting, or smaller results, from the task."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.limit, self.source)


class RemoteTaskError(GolemError):
    """A task raised an exception whose type the restricted decoder does not rebuild.

    It carries what could be read safely: the remote type's name, its message and the
    remote traceback as text.
    """

    def __init__(self, type_name: str, message: str = "", traceback_text: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(type_name, message, traceback_text)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.message, self.traceback_text)

    def __str__(self) -> str:
        text = f"A task raised {self.type_name}: {self.message}" if self.message else f"A task raised {self.type_name}"
        text += (
            f"\n(golem-jupyter does not rebuild {self.type_name} from provider bytes, so it is shown as a "
            "RemoteTaskError; raise a built-in exception or one defined in your notebook to get the exception itself.)"
        )
        if self.traceback_text:
            text += "\nRemote traceback:\n" + self.traceback_text.rstrip()
        return text
