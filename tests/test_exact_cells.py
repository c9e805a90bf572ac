"""Exact cells: a ``%%golem`` cell leaves the notebook exactly as plain Python would (DESIGN.md section 5).

One test per class of cell that real notebooks hold and that once came out different. Each runs
the same cells plainly and with ``%%golem --local`` (a few classes on the market too) and compares
every name either run bound or changed: its exact type and value (arrays by dtype, shape and
values, NaN-aware; generators by state; functions by code and defaults) and which names share
memory (the same object, or arrays over the same memory). Where a probe is given, it runs after
the cells in both namespaces: what the next plain cell would see (the next random draw, a call).
"""

from __future__ import annotations

import ast
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
from exactness import check
from magic_shell import text_shell
from marketkit import local_market

from golem_jupyter.trust import UnsafePayload, restricted_loads

pytestmark = pytest.mark.timeout(600)

NOTEBOOK = Path(__file__).resolve().parent.parent / "golem_jupyter"


@pytest.fixture(scope="module")
def shell():
    with text_shell() as ip:
        yield ip


def dry_run(shell, cell: str, setup: str = "", capsys=None) -> str:
    shell.reset()
    if setup:
        shell.run_cell(setup).raise_error()
    capsys.readouterr()
    shell.run_cell_magic("golem", "--local --dry-run", cell)
    return capsys.readouterr().out


# ---------------------------------------------------------------------------- the classes

A_EARLIER = "scale = 3\noffset = 10\ndef f(v):\n    return v * scale\ndef g(v):\n    return f(v) + offset\n"
A_CELLS = [
    ("xs = [1, 2, 3]", [A_EARLIER, "ys = [f(x) for x in range(scale)]\nzs = [g(x) for x in xs]"]),
    ("xs = [1, 2, 3]", [A_EARLIER, "out = []\nfor x in range(offset):\n    out.append(g(x))"]),
    ("xs = [1, 2, 3]", [A_EARLIER, "total = sum(f(x) for x in xs)\nws = [f(x) for x in range(len(xs) * scale)]"]),
    # A function reading a global named like the comprehension's own variable reads the global one.
    ("x = 100\ndef h(v):\n    return v + x", ["hs = [h(x) for x in range(3)]"]),
]


@pytest.mark.parametrize(("setup", "cells"), A_CELLS)
def test_a_function_from_an_earlier_cell_reads_that_cells_globals(shell, setup, cells):
    """Plain Python: a function defined in an earlier cell reads the notebook's globals when it is called,
    wherever the call is (a comprehension over a notebook list or over ``range(scale)``, a loop, a generator).
    ``ys == [0, 3, 6]``, ``zs == [13, 16, 19]``; ``hs == [100, 101, 102]`` (``h`` reads the global ``x``)."""
    check(shell, setup, cells)


B_SETUP = "import numpy as np\nticks = 0\nexec('def tick():\\n    global ticks\\n    ticks += 1\\n    return ticks')"
B_CELLS = [
    "counter = 0\ndef bump(step):\n    global counter\n    counter += step\n    return counter\n"
    "first = bump(1)\nsecond = bump(10)\nboth = (first, second)",
    # defined in an earlier cell whose source the kernel does not have (exec): known from its bytecode
    "t1 = tick()\nt2 = tick()\nt3 = [tick() for _ in range(3)]",
    # a function that changes a global in place, called by several statements
    "log = []\ndef record(v):\n    log.append(v)\n    return len(log)\nn1 = record('a')\nn2 = record('b')",
]


@pytest.mark.parametrize("cell", B_CELLS)
def test_b_functions_that_assign_a_global_run_in_order(shell, cell):
    """Plain Python: each call of a function that declares ``global counter`` and assigns it sees the previous
    call's value: ``first == 1``, ``second == 11``, ``counter == 11``; ``tick()`` five times leaves ``ticks == 5``
    and ``t3 == [3, 4, 5]``; ``record`` appends to the one ``log``: ``log == ['a', 'b']``, ``n2 == 2``."""
    check(shell, B_SETUP, cell)


def test_b_global_calls_run_in_one_task_and_the_plan_says_why(shell, capsys):
    """Plain Python runs the two calls in order; the plan puts them in one task and says it is `global`."""
    out = dry_run(shell, B_CELLS[0], capsys=capsys)
    assert "together, because `global counter`: lines 2, 7, 8 call functions that change counter" in out
    assert "so they run in order in one task" in out


C_CASES = [
    ("code = 'dyn = 7\\nmore = dyn * 6'", "exec(code)\nafter = 1"),
    ("", "for i in range(3):\n    exec(f'v{i} = i * i')"),
    ("data = [1]\nkeep = data", "exec('data.append(2)')\nn = len(data)"),
    ("", "from math import *\nr = sqrt(16.0) + pi"),
    ("import numpy as np\nx = np.arange(3)", "from os.path import *\nj = join('a', 'b')\ny = x * 2"),
    ("base = 4", "got = eval('base * 2')\nexec('made = got + 1')"),
]


@pytest.mark.parametrize(("setup", "cell"), C_CASES)
def test_c_serial_cells_bring_back_every_name_they_bind(shell, setup, cell):
    """Plain Python: ``exec(code)`` binds ``dyn`` and ``more``; ``exec(f'v{i} = ...')`` binds ``v0``, ``v1``,
    ``v2``; ``exec('data.append(2)')`` changes ``data`` (and ``keep``, the same list) in place; ``from math
    import *`` binds every public name of ``math`` (``sqrt``, ``pi``, ...) in the notebook."""
    check(shell, setup, cell)


D_SETUP = (
    "import numpy as np\nseed = 12345\nxs = np.linspace(0, 1, 20)\nys = 3 * xs ** 2 - xs + 0.5\n"
    "hm = np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0], hard_mask=True)\nnb_rng = np.random.default_rng(7)"
)
D_CELLS = [
    "rng = np.random.default_rng(seed)\nx = rng.integers(0, 10, size=5)\ny = x * 2",
    "gens = {n: np.random.Generator(getattr(np.random, n)(seed)) for n in "
    "['PCG64', 'PCG64DXSM', 'MT19937', 'Philox', 'SFC64']}\ndraws = {n: g.random() for n, g in gens.items()}",
    "rs = np.random.RandomState(3)\nz = rs.standard_normal(3)\nbits = np.random.PCG64(seed)\n"
    "ss = np.random.SeedSequence(42)\nkids = ss.spawn(2)",
    "p = np.polynomial.Polynomial.fit(xs, ys, 2)\nc = np.polynomial.Chebyshev([1, 2, 3], symbol='t')\n"
    "others = [k([1.0, -2.0]) for k in (np.polynomial.Legendre, np.polynomial.Hermite, np.polynomial.HermiteE, "
    "np.polynomial.Laguerre)]",
    "m = np.ma.masked_array(np.arange(5.0), mask=[0, 1, 0, 0, 1], fill_value=-1.0)\nmm = m * 2\n"
    "plain_mask = np.ma.masked_array([1, 2])\nhard = np.ma.masked_array([1.0, np.nan], mask=[0, 1], hard_mask=True)\n"
    "gone = np.ma.masked_array([1], mask=[1])[0]\nbig = m.max()",
    # the notebook's own masked array and generator, changed in place
    "hm[1] = 9.0\nhm[0] = 5.0\nhs = float(hm.sum())\nfirst = nb_rng.random()\nsecond = nb_rng.integers(0, 9, 3)",
    # record arrays computed by a task
    "rec = np.rec.fromarrays([np.arange(3), xs[:3]], names='n,x')\nlight = rec[rec.n < 2]\nrow = rec[1]\n"
    "plain_rec = np.arange(4.0).view(np.recarray) * 2",
]


@pytest.mark.parametrize("cell", D_CELLS)
def test_d_numpy_generators_series_and_masked_arrays_come_back(shell, cell):
    """Plain Python: ``rng`` is a Generator whose next draw continues after the five integers; the five bit
    generators, a RandomState (with its cached Gaussian), a SeedSequence that spawned two children, the
    polynomial series (fit domain and window, symbol), masked arrays (mask, fill value, hard mask,
    ``np.ma.masked``) and record arrays (and their ``np.record`` items) stay what they are, and the other names
    of the cell are there too."""
    probe = "rng.random()" if "default_rng" in cell else "nb_rng.random()"
    check(shell, D_SETUP, cell, probe=probe)


def _crafted(function, *args) -> bytes:
    """A pickle that calls ``function`` (by reference) with ``args``: what a hostile provider could send."""

    class Call:
        def __reduce__(self):
            return function, args

    return pickle.dumps(Call(), protocol=2)


def test_d_crafted_generator_pickles_are_refused():
    """Only this project's data-only reconstructors rebuild NumPy's objects, each checking its arguments."""
    from golem_jupyter.trust import _numpy_state as state

    good = state.REDUCERS[type(np.random.default_rng(1))](np.random.default_rng(1))
    assert good[0] is state.generator
    pcg = np.random.PCG64(1).state
    refused = [
        pickle.dumps(np.random.default_rng(1), protocol=2),  # NumPy's own: names numpy.random._pickle
        pickle.dumps(np.ma.masked_array([1, 2], mask=[0, 1]), protocol=2),  # names numpy.ma.core._mareconstruct
        _crafted(state.bit_generator, "BitGenerator", pcg, None),  # not an allowlisted bit generator
        _crafted(state.bit_generator, "Evil", pcg, None),
        _crafted(state.bit_generator, "MT19937", pcg, None),  # a state that names another generator
        _crafted(state.bit_generator, "PCG64", {"bit_generator": "PCG64", "state": {"state": 2**300}}, None),
        _crafted(state.generator, 7),  # a Generator on something that is no bit generator
        _crafted(state.polynomial, "ABCPolyBase", np.zeros(2), None, None, "x"),
        _crafted(state.polynomial, "Polynomial", [1, 2], None, None, "x"),  # coefficients that are no array
        _crafted(state.masked_array, np.zeros(2), np.zeros(3, dtype=bool), None, False),  # a mask that does not fit
        _crafted(state.seed_sequence, 1, (), 2**20, 0),
        _crafted(state.record_array, [1, 2]),  # record data that is no array
        _crafted(state.record, np.zeros(())),  # a record of no fields
        _crafted(state.record, np.zeros(2, dtype=[("a", "i4")])),  # a record of more than one item
        _crafted(print, "hello"),  # another callable
    ]
    for data in refused:
        with pytest.raises(UnsafePayload):
            restricted_loads(data)
    # A state holding an object rather than plain data is refused before NumPy sees it.
    namespace = types.SimpleNamespace(a=1)
    with pytest.raises(UnsafePayload):
        restricted_loads(_crafted(state.bit_generator, "PCG64", {"bit_generator": "PCG64", "state": namespace}, None))
    rebuilt = restricted_loads(_crafted(state.bit_generator, "PCG64", pcg, None))
    assert type(rebuilt) is np.random.PCG64 and rebuilt.state == pcg


E_SETUP = (
    "import numpy as np\nx = np.arange(6)\nview = x[2:]\ncounts = np.zeros(4, dtype=int)\n"
    "idx = np.array([0, 1, 1, 3])\nout = np.zeros(5)\nout[0] = 1.0\ndef step(v):\n    return np.sqrt(v + 1.0)\n"
    "w = np.array([1.0, 3.0])\nwv = w[:1]\ndef normalize(a):\n    a /= a.sum()"
)
E_CELLS = [
    "x[3] = 99\ntotal = int(x.sum())",
    "x += 1\nfirst = int(x[0])",
    "normalize(w)\npeak = float(w.max())",
    "np.add.at(counts, idx, 1)\nbusiest = int(counts.argmax())",
    "for i in range(4):\n    out[i + 1] = step(out[i])\nlast = out[-1]",
    "buf = np.zeros(3)\nnp.multiply(np.ones(3), 4.0, out=buf)\nbuf[0] = -1.0",
]


@pytest.mark.parametrize("cell", E_CELLS)
def test_e_in_place_changes_of_arrays(shell, cell):
    """Plain Python: ``x[3] = 99`` changes the notebook's ``x`` in place (``view``, a view of it made in an earlier
    cell, sees ``view[1] == 99``), and so does ``x += 1``; ``np.add.at(counts, idx, 1)`` gives ``counts == [1, 2,
    0, 1]``; the loop fills ``out`` from ``out[0]`` with a notebook function that uses ``np``; ``out=buf`` writes
    into ``buf``; ``normalize(w)``, a notebook function that divides its argument in place, changes ``w`` (and
    ``wv``, a view of it)."""
    check(shell, E_SETUP, cell)


F_SETUP = (
    "import numpy as np\nx2 = np.arange(16).reshape(4, 4)\ngrid = np.arange(12.0).reshape(4, 3)\nitems = [1, 2]\n"
    "rows = [[1, 2], [3], [4, 5, 6]]\nclass Model:\n    def __init__(self):\n        self.weights = np.ones(3)\n"
    "model = Model()\nrecords = np.zeros(2, dtype=[('age', 'i4'), ('weight', 'f8')])"
)
F_CELLS = [
    ["sub = x2[:2, :2]\nupper, lower = np.vsplit(grid, [2])\nsub[0, 0] = 99\nt = x2.T\ns = int(x2.sum())",
     "sub[1, 1] = -1\nlower[0, 0] = -5.0\nn = int(t[1, 1])"],
    ["a = np.arange(10) * 2\nv = a[::2]\nv[0] = -5\nw = a.reshape(2, 5)\nalias = items\nalias.append(3)\n"
     "pair = (x2, grid)"],
    ["for row in rows:\n    size = len(row)\nfirst = rows[0]\nlongest = max(rows, key=len)\nweights = model.weights\n"
     "same_model = model if size else None"],
    # indices and arguments that name a module's attribute: np.newaxis, a class to view as
    ["col = x2[0][:, np.newaxis]\ncol[1, 0] = -7\nrec = records.view(np.recarray)\nrec.age[0] = 5\n"
     "as_bytes = grid.view(np.uint8)\nn = int(x2.sum())"],
]  # fmt: skip


@pytest.mark.parametrize("cells", F_CELLS)
def test_f_views_and_aliases_share_memory(shell, cells):
    """Plain Python: ``sub = x2[:2, :2]`` is a view of ``x2`` (``sub[0, 0] = 99`` changes ``x2``, in this cell
    and in the next one), ``np.vsplit`` gives views of ``grid``, ``t`` is a view of ``x2``; ``v`` is a view of
    the array the cell computed (``a[0] == -5``); ``alias`` is the notebook's ``items`` (``items == [1, 2, 3]``);
    after ``for row in rows`` the name ``row`` is the list ``rows[-1]``, ``longest`` is an item of ``rows`` too,
    ``weights`` is ``model.weights`` and ``same_model`` is ``model``; ``x2[0][:, np.newaxis]`` and
    ``records.view(np.recarray)`` are views too (``col[1, 0] = -7`` changes ``x2``, ``rec.age[0] = 5`` changes
    ``records``)."""
    check(shell, F_SETUP, cells)


G_SETUP = "import numpy as np\nimport random\nnp.random.seed(1)\nrandom.seed(2)"
G_CELLS = [
    "np.random.seed(0)\nheavy = sum(i * i for i in range(1000))\npick = np.random.choice(10, 3)\nr = random.random()\n"
    "random.seed(5)\nr2 = random.randint(0, 100)\ndraws = [np.random.random() for _ in range(3)]",
    "def noisy(v):\n    return v + np.random.normal()\nvals = [noisy(k) for k in range(4)]\n"
    "random.shuffle(lst := [1, 2, 3, 4])",
    "old = np.seterr(all='raise')\ntry:\n    bad = np.array([1.0]) / 0\nexcept FloatingPointError:\n"
    "    bad = 'raised'\nrestored = np.seterr(**old)",
]


@pytest.mark.parametrize("cell", G_CELLS)
def test_g_hidden_module_state_keeps_its_order(shell, cell):
    """Plain Python: ``np.random.seed(0)`` then ``np.random.choice(10, 3)`` draws ``[2, 8, 4]``; ``random``'s
    draws follow its seeds; a notebook function drawing from ``np.random`` draws in cell order; under
    ``np.seterr(all='raise')`` a division by zero raises. Afterwards the next ``np.random.random()`` and
    ``random.random()`` in the kernel are the ones plain Python gives."""
    check(shell, G_SETUP, cell, probe="(np.random.random(), random.random(), np.geterr())")


H_SETUP = "import math"
H_CELLS = [
    (
        "results = {}\nfor k in [1, 2, 3]:\n    f = lambda z: z ** k\n    g = lambda z, k=k: z + k\n"
        "    results[k] = f(2) + g(1)\nafter = f(3)",
        "(f(2), g(1))",
    ),
    (
        "for n in range(2):\n    def h(v, n=n, *, scale=math.pi):\n        'Scaled.'\n        return v * n * scale\n"
        "    h.calls = n\nlast = h(1)",
        "(h(2), h.__doc__, h.calls, h.__kwdefaults__)",
    ),
]


@pytest.mark.parametrize(("cell", "probe"), H_CELLS)
def test_h_functions_bound_in_a_loop_come_back(shell, cell, probe):
    """Plain Python: after the loop ``f`` is the last lambda (it reads the global ``k``, now 3) and ``g`` has
    the default ``k=3``; ``h`` is the last function defined in the loop, with its defaults, docstring and
    attribute. Both are functions of the notebook (their globals are the notebook's)."""
    got = check(shell, H_SETUP, cell, probe=probe)
    for value in got.values():
        if isinstance(value, types.FunctionType):
            assert value.__globals__ is shell.user_ns


def test_i_code_compiled_for_a_cell_inherits_no_compiler_flags():
    """Plain Python compiles a cell without the project's ``from __future__ import annotations``: every
    ``compile`` call in the notebook package and the worker passes ``dont_inherit=True``."""
    calls = []
    for path in [*(NOTEBOOK / "notebook").glob("*.py"), NOTEBOOK / "worker" / "runner.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "compile":
                calls.append((path.name, node.lineno, any(k.arg == "dont_inherit" for k in node.keywords)))
    assert calls and all(flag for _, _, flag in calls), calls


J_SETUP = "import collections\nfrom fractions import Fraction\nwords = ['a', 'b', 'a']"
J_CELLS = [
    "import array\nL = list(range(10))\nA = array.array('i', L)\nsize = A.itemsize * len(A)",
    "import pathlib\ncounts = collections.Counter(words)\nhome = pathlib.PurePosixPath('/tmp', *words)\n"
    "half = Fraction(1, 2)\nn = len(counts) + len(home.parts)",
    "from collections import deque, Counter\nq = deque(words, maxlen=2)\nc = Counter(q)",
]


@pytest.mark.parametrize("cell", J_CELLS)
def test_j_values_that_cannot_come_back_are_made_in_the_kernel(shell, cell):
    """Plain Python: ``array.array('i', L)``, ``collections.Counter(words)`` and a ``pathlib`` path are values
    of the notebook like any other. A provider cannot send them back (the restricted decoder rebuilds only
    data types), so a statement whose value is an instance of a library class the decoder does not rebuild
    runs in the kernel; ``Fraction`` and ``deque``, which come back, still run in tasks."""
    check(shell, J_SETUP, cell)


# ---------------------------------------------------------------------------- item 4: --dry-run says why


def test_dry_run_says_why_statements_run_in_the_kernel_or_together(shell, capsys):
    """Each reason, in the words a user can act on."""
    out = dry_run(shell, "np.random.seed(0)\npick = np.random.choice(10, 3)", "import numpy as np", capsys)
    assert "kernel (before the graph), line 2: np.random.seed(0)" in out
    assert "why: hidden state: it reads and writes the global state of numpy.random" in out
    out = dry_run(shell, "sub = x2[:2, :2]\ns = int(x2.sum())", F_SETUP, capsys)
    assert "why: view: it only makes views or aliases of x2" in out
    out = dry_run(shell, "sub[0, 0] = 99\ns = int(x2.sum())", F_SETUP + "\nsub = x2[:2, :2]", capsys)
    assert "why: in-place change: it changes sub, which shares memory with x2" in out
    out = dry_run(shell, "x = sum(range(10))\nnp.seterr(all='ignore')\ny = x + 1", "import numpy as np", capsys)
    assert "every statement may read it" in out and "kernel (after the graph), line 3" in out
    assert "it comes after line 3, which runs in the kernel after the graph" in out
    out = dry_run(shell, "exec(code)\nafter = 1", "code = 'dyn = 7'", capsys)
    assert "Serial: `exec` can read and write any name" in out and "every name it binds or changes comes back" in out
    out = dry_run(shell, "from math import *\nr = sqrt(2)", "", capsys)
    assert "why: star import: it binds names that are only known when it runs" in out
    out = dry_run(shell, "n = len(globals())", "", capsys)
    assert "Kernel: `globals()`" in out and "runs in the kernel, as plain Python" in out
    out = dry_run(shell, "xs = []\nxs.append(1)\nn = len(xs)", "", capsys)
    assert "in-place change: xs is changed in place by line 3 and used by line 2" in out
    out = dry_run(shell, B_CELLS[0], "", capsys)
    assert "`global counter`" in out
    out = dry_run(shell, J_CELLS[0], "", capsys)
    assert "kernel (after the graph), line 4: A = array.array('i', L)" in out
    assert "why: no way back: its value is an instance of array.array, which a provider cannot send back" in out


# ---------------------------------------------------------------------------- the market


MARKET_CASES = [
    ("a", A_CELLS[0][0], A_CELLS[0][1], None),
    ("b", B_SETUP, [B_CELLS[0]], None),
    ("c", C_CASES[0][0], [C_CASES[0][1]], None),
    ("d", D_SETUP, [D_CELLS[0]], "rng.random()"),
    ("e", E_SETUP, [E_CELLS[2]], None),
    ("f", F_SETUP, F_CELLS[0], None),
    ("g", G_SETUP, [G_CELLS[0]], "(np.random.random(), random.random())"),
    ("h", H_SETUP, [H_CELLS[0][0]], H_CELLS[0][1]),
]


def test_representative_cells_on_the_market(shell, tmp_path_factory):
    """The same cells on rented providers (separate processes, the market's decoder installed) leave the same
    notebook as plain Python."""
    with local_market(tmp_path_factory.mktemp("exact-market"), providers=2) as market:
        shell.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 2 --budget 0.05")
        try:
            for label, setup, cells, probe in MARKET_CASES:
                try:
                    check(shell, setup, cells, probe=probe, line="")
                except Exception as error:
                    raise AssertionError(f"class {label} on the market: {error!r}") from error
        finally:
            shell.run_line_magic("golem", "close")


def test_random_state_is_restored_when_the_cell_fails(shell):
    """Plain Python would leave a half-run cell's effects; the magic writes nothing: the seed a kernel statement
    set before a task failed is undone, like the names."""
    shell.reset()
    shell.run_cell("import numpy as np\nnp.random.seed(7)\nlst = [1, 2]").raise_error()
    expected = np.random.get_state(legacy=False)
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("golem", "--local", "np.random.seed(0)\nlst.append(3)\nboom = 1 / 0")
    state = np.random.get_state(legacy=False)
    assert state["state"]["pos"] == expected["state"]["pos"]
    assert np.array_equal(state["state"]["key"], expected["state"]["key"])
    assert shell.user_ns["lst"] == [1, 2]
