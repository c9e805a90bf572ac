"""A corpus of real notebook cells: ``%%golem`` leaves each notebook as plain Python would (DESIGN.md section 5).

Where the cells come from (tests/corpus/*.json, one file per notebook, each naming its repository, commit
and path, and for every code cell its index, original source and the source used):

* the NumPy chapter of Jake VanderPlas's *Python Data Science Handbook*
  (https://github.com/jakevdp/PythonDataScienceHandbook, notebooks/02.*.ipynb; code under the MIT license);
* chapters of his *A Whirlwind Tour of Python* (https://github.com/jakevdp/WhirlwindTourOfPython; CC0):
  variables, data structures, control flow, functions, errors and exceptions (the standard library).

Cells stay in their notebook's order. Only lines that need a display or IPython (``%timeit``,
``%matplotlib``, plots) are dropped (``dropped``); cells that need a package not installed here (SciPy,
pandas' data sets) are skipped (``skipped`` says why). A ``setup`` cell seeds ``np.random`` where a notebook
draws from it without a seed. ``raises``: the error the book's own output shows for the cell.

Each notebook runs plainly in one namespace and with ``%%golem --local`` (then on the devnet market) in an
IPython shell, cell by cell, each run with its own hidden module state; after every cell the two notebooks
must hold the same names, each exactly the same (type and value; arrays by dtype, shape and values,
NaN-aware) and sharing memory the same way. A cell that raises must raise the same error with the magic
and leave the notebook as it was; it then runs plainly in the shell too, so that both go on alike.
"""

from __future__ import annotations

import copy
import json
import time
import types
from pathlib import Path

import pytest
from exactness import ModuleState, same_notebook, sharing, user_names
from magic_shell import text_shell
from marketkit import local_market

pytestmark = pytest.mark.timeout(600)

CORPUS = Path(__file__).parent / "corpus"
NOTEBOOKS = sorted(path.stem for path in CORPUS.glob("*.json"))


def load(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def shell():
    with text_shell() as ip:
        yield ip


@pytest.fixture(scope="module")
def market_shell(shell, tmp_path_factory):
    """The module's shell connected to one devnet market, for every notebook."""
    with local_market(tmp_path_factory.mktemp("corpus-market"), providers=2) as market:
        shell.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 2 --budget 0.05")
        try:
            yield shell
        finally:
            shell.run_line_magic("golem", "close")


def run_notebook(shell, name: str, line: str) -> None:
    """Run the notebook ``name`` plainly and with ``%%golem {line}`` side by side; compare after every cell."""
    notebook = load(name)
    setup = (notebook.get("setup") or {}).get("source", "")
    start = ModuleState.capture()
    plain_state, golem_state = ModuleState(start), ModuleState(start)
    plain: dict = {"__name__": "__main__"}
    shell.reset()
    with plain_state:
        exec(compile(setup, "<setup>", "exec", dont_inherit=True), plain)
    with golem_state:
        shell.run_cell(setup).raise_error()
    for cell in notebook["cells"]:
        if "source" not in cell:
            continue
        where = f"{name} cell {cell['index']}"
        source = cell["source"]
        raises = cell.get("raises")
        if raises:
            names = user_names(shell.user_ns, shell)
            before, shared_before = snapshot(names), sharing(names)
        plain_error = golem_error = None
        with plain_state:
            try:
                exec(compile(source, f"<{where}>", "exec", dont_inherit=True), plain)
            except Exception as error:  # noqa: BLE001 (compared with the magic's below)
                plain_error = error
        with golem_state:
            try:
                shell.run_cell_magic("golem", line, source)
            except Exception as error:  # noqa: BLE001 (compared with plain Python's)
                golem_error = error
        assert error_name(plain_error).endswith(raises or "None"), f"{where}: plain Python: {plain_error!r}"
        assert error_name(golem_error) == error_name(plain_error), f"{where}: %%golem {line}: {golem_error!r}"
        if raises:
            assert str(golem_error) == str(plain_error), f"{where}: {golem_error!r} != {plain_error!r}"
            # The magic wrote nothing; then the cell runs plainly in the shell too, as in the book (a failed cell
            # leaves what ran before the error), so that both notebooks go on from the same state.
            same_notebook(user_names(shell.user_ns, shell), before, f"{where} (after the error)", shared_before)
            with golem_state:
                shell.run_cell(source)
        same_notebook(user_names(shell.user_ns, shell), user_names(plain), where)


def error_name(error: BaseException | None) -> str:
    return "None" if error is None else f"{type(error).__module__}.{type(error).__qualname__}"


def snapshot(names: dict) -> dict:
    """Deep copies of the notebook's values (modules, functions and classes as themselves), one memo for all."""
    memo = {id(v): v for v in names.values() if isinstance(v, types.ModuleType)}
    return copy.deepcopy(names, memo)


def test_the_corpus_is_large_and_traceable():
    """At least 80 cells, each kept with where it came from and its original source."""
    used = 0
    for name in NOTEBOOKS:
        notebook = load(name)
        assert notebook["repo"] and len(notebook["commit"]) == 40 and notebook["path"].endswith(".ipynb")
        for cell in notebook["cells"]:
            assert isinstance(cell["index"], int) and cell["original"]
            assert ("source" in cell) != ("skipped" in cell), cell
            used += "source" in cell
    assert used >= 80


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_with_local(shell, name):
    started = time.monotonic()
    run_notebook(shell, name, "--local")
    print(f"{name}: {time.monotonic() - started:.1f} s with --local")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_on_the_market(market_shell, name):
    started = time.monotonic()
    run_notebook(market_shell, name, "")
    print(f"{name}: {time.monotonic() - started:.1f} s on the market")
