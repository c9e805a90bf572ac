"""What the trust boundary raises: a refused payload, and a remote exception it would not rebuild."""

from __future__ import annotations

from typing import Any

from ..errors import GolemError


class UnsafePayload(GolemError, TypeError):
    """Provider bytes named something the restricted decoder does not rebuild.

    A :class:`TypeError` too, so that code which expects a decode failure to be a TypeError
    (distributed's ``clean_exception`` does, for tracebacks) treats it as one.
    """

    def __init__(self, type_name: str, detail: str | None = None) -> None:
        self.type_name = type_name
        self.detail = detail
        message = (
            f"A provider sent an object of type {type_name}, which golem-jupyter does not rebuild from "
            "provider bytes (only plain values, NumPy arrays and classes defined in your notebook are)."
        )
        if detail:
            message += f" {detail}."
        super().__init__(message + " Return plain data from the task instead.")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.detail)


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
