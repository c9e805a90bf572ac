"""A real IPython shell with the extension loaded and plain-text output, for the magic's tests."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from IPython.core.interactiveshell import InteractiveShell


@contextlib.contextmanager
def text_shell() -> Iterator[InteractiveShell]:
    """The process's InteractiveShell with ``%load_ext golem_jupyter``; its sessions closed after."""
    saved = os.environ.get("GOLEM_DISPLAY")
    os.environ["GOLEM_DISPLAY"] = "text"
    # The shell makes its user namespace this process's __main__ (a module without __spec__, which
    # multiprocessing's spawn trips over): only for as long as the block lasts.
    main = sys.modules.get("__main__")
    ip = InteractiveShell.instance()
    sys.modules["__main__"] = ip.user_module
    ip.run_line_magic("load_ext", "golem_jupyter")
    try:
        yield ip
    finally:
        ip.run_line_magic("golem", "close")
        if main is not None:
            sys.modules["__main__"] = main
        if saved is None:
            os.environ.pop("GOLEM_DISPLAY", None)
        else:
            os.environ["GOLEM_DISPLAY"] = saved
