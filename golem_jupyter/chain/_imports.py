"""The Ethereum libraries, imported without raising the interpreter's recursion limit.

On import, py_ecc (which eth_account imports) raises ``sys.setrecursionlimit`` to 100,000, and
py-evm (``eth``, the embedded chain) to 12,288, for recursion of their own that golem-jupyter
never needs that deep. In the requestor's kernel such a limit is dangerous: CPython recurses in
C, about a hundred bytes of stack a level, when it prints, compares or frees a nested value, and
stops at the recursion limit. At 1,000 that is a RecursionError; at 100,000 the thread's stack
(8 MiB) runs out first and a deeply nested value (a provider's result, a registry offer's JSON)
kills the kernel with a segmentation fault.

The chain package imports the libraries here before anything else, and puts the limit back as
it was. Only the first import changes the limit: a library imported before golem-jupyter (a
notebook that imported web3 itself) has raised it already, and is left alone.
"""

from __future__ import annotations

import importlib
import sys

ETH_LIBRARIES = ("web3", "eth_account", "py_ecc", "eth")


def import_keeping_recursion_limit(*modules: str) -> None:
    """Import ``modules``; ``sys.getrecursionlimit()`` is the same afterwards as before."""
    limit = sys.getrecursionlimit()
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        sys.setrecursionlimit(limit)


import_keeping_recursion_limit(*ETH_LIBRARIES)

from web3 import Web3  # noqa: E402 (imported above already: this is only the name)

__all__ = ["ETH_LIBRARIES", "Web3", "import_keeping_recursion_limit"]
