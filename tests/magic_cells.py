"""Cells for the equivalence tests: each must leave the same namespace run plainly and with %%golem.

Each entry is (name, setup, cell): ``setup`` runs plainly in the notebook first (earlier cells),
``cell`` is the cell under test.
"""

from __future__ import annotations

CELLS: list[tuple[str, str, str]] = [
    ("independent", "", "a = 1\nb = 2.5\nc = 'text'"),
    ("chain", "", "a = 2\nb = a * 3\nc = b + a"),
    ("reads-notebook", "x = 10\ny = [1, 2, 3]", "z = x + sum(y)\nw = [v * x for v in y]"),
    (
        "exact-types",
        "",
        "t = (1, 'a', None)\ns = {1, 2, 3}\nf = frozenset('ab')\nbig = 2 ** 200 + 1\nc = 3 + 4j\nb = b'\\x00\\xff'",
    ),
    (
        "library-values",
        "import fractions, decimal, datetime",
        "q = fractions.Fraction(3, 7)\nd = decimal.Decimal('1.10')\nwhen = datetime.datetime(2026, 1, 2, 3, 4, 5)",
    ),
    ("augmented", "n = 5", "n += 1\nm = n * 2\nn *= 10"),
    ("del-name", "gone = 1", "tmp = gone + 1\ndel gone\nkept = tmp"),
    ("del-item", "d = {'a': 1, 'b': 2}", "del d['a']\nkeys = sorted(d)"),
    ("build-list", "", "acc = []\nacc.append(1)\nacc.extend([2, 3])\ntotal = sum(acc)"),
    ("alias-mutation", "", "a = [1]\nb = a\na.append(2)\nsame = b is a"),
    ("item-assignment", "grid = [[0] * 3 for _ in range(3)]", "grid[1][1] = 5\ncentre = grid[1][1]"),
    ("attribute-assignment", "import types\nobj = types.SimpleNamespace(v=1)", "obj.v = 42\nobj.w = obj.v + 1"),
    ("mutating-notebook-list", "data = [3, 1, 2]", "data.sort()\nfirst = data[0]"),
    ("comprehension-fanout", "", "squares = [i * i for i in range(20)]"),
    ("comprehension-if", "limit = 7", "odd = [i for i in range(20) if i % 2 if i < limit]"),
    ("fanout-over-computed", "", "n = 6\nvals = [k + 1 for k in range(n)]"),
    ("append-loop", "", "out = []\nfor i in range(10):\n    out.append(i * 3)"),
    ("append-loop-existing", "out = ['start']", "for word in ['a', 'b']:\n    out.append(word.upper())"),
    ("setitem-loop", "", "table = {}\nfor k in 'xyz':\n    table[k] = ord(k)"),
    (
        "tuple-target-loop",
        "pairs = [(1, 'a'), (2, 'b')]",
        "labels = {}\nfor num, ch in pairs:\n    labels[ch] = num * 10",
    ),
    ("empty-loop", "i = 'before'", "res = []\nfor i in []:\n    res.append(i)"),
    ("def-and-use", "", "def double(v):\n    return 2 * v\n\nfour = double(2)"),
    ("def-reads-computed-global", "", "scale = 3\ndef times(v):\n    return v * scale\n\nsix = times(2)"),
    ("notebook-function", "def add(p, q):\n    return p + q\noffset = 100", "r = add(1, 2)\ns = add(offset, 1)"),
    ("notebook-function-sees-new-global", "def get_k():\n    return k\nk = 1", "k = 2\nseen = get_k()"),
    ("lambda", "", "inc = lambda v: v + 1\nthree = inc(2)"),
    ("recursion", "", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n\nf10 = fact(10)"),
    (
        "class-instances",
        "",
        "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n\n"
        "p = Point(1, 2)\npts = [Point(i, i) for i in range(3)]",
    ),
    ("notebook-class", "class Box:\n    def __init__(self, v):\n        self.v = v", "bx = Box(5)\nbv = bx.v"),
    (
        "imports",
        "",
        "import math\nfrom collections import Counter\nroot = math.sqrt(16)\ncounts = dict(Counter('abca'))",
    ),
    (
        "numpy",
        "import numpy as np",
        "arr = np.arange(12).reshape(3, 4)\ncol = arr.sum(axis=0)\nmean = float(arr.mean())",
    ),
    ("numpy-inplace", "import numpy as np\nm = np.zeros(4)", "m[2] = 7.0\nm += 1"),
    ("walrus", "", "y0 = (x0 := 5) + 1"),
    ("walrus-in-comprehension", "", "hits = [z for v in range(5) if (z := v * 2) > 3]"),
    ("generator", "", "total = sum(v * v for v in range(100))"),
    ("sorted-key", "words = ['bb', 'a', 'ccc']", "ordered = sorted(words, key=lambda w: -len(w))"),
    (
        "if-while",
        "",
        "count = 0\nwhile count < 5:\n    count += 1\nif count == 5:\n    flag = True\nelse:\n    flag = False",
    ),
    ("try-except", "", "try:\n    bad = 1 / 0\nexcept ZeroDivisionError as exc:\n    msg = str(exc)"),
    ("with", "import contextlib", "with contextlib.suppress(KeyError):\n    missing = {}['k']\nafter = 1"),
    ("exec-serial", "", "exec('made = 41')\nmade += 1"),
    ("eval-serial", "base = 4", "got = eval('base * 2')"),
    (
        "match",
        "cmd = ('go', 3)",
        "match cmd:\n    case ('go', steps):\n        where = steps\n    case _:\n        where = None",
    ),
    ("starred", "", "head, *rest = [1, 2, 3, 4]"),
    ("chained-assign", "", "u = v = [0]\nu.append(1)"),
    ("defaults-from-computed", "", "dflt = 9\ndef g(a=dflt):\n    return a\n\nnine = g()"),
    ("strings", "name = 'golem'", "shout = name.upper()\nparts = 'a,b,c'.split(',')"),
    ("nested-data", "", "cfg = {'a': [1, {'b': (2, 3)}], 'c': {4, 5}}"),
    ("prints-only", "", "print('hello')\nprint('world')"),
    # Exact cells (tests/test_exact_cells.py has the full classes): functions writing globals, in-place
    # changes of arrays, views, hidden state, functions bound in loops, exec of a notebook string.
    (
        "global-in-function",
        "",
        "counter = 0\ndef bump():\n    global counter\n    counter += 1\n    return counter\nfirst = bump()\n"
        "second = bump()",
    ),
    (
        "inplace-numpy",
        "import numpy as np\nx = np.arange(5)\ncounts = np.zeros(3, dtype=int)",
        "x[2] = 99\nnp.add.at(counts, [0, 2, 2], 1)",
    ),
    (
        "view-write-through",
        "import numpy as np\nx2 = np.arange(16).reshape(4, 4)",
        "sub = x2[:2, :2]\nsub[0, 0] = 99\ntotal = int(x2.sum())",
    ),
    ("hidden-random", "import numpy as np", "np.random.seed(0)\npick = np.random.choice(10, 3)"),
    ("lambda-in-loop", "", "for k in range(3):\n    f = lambda z: z + k\nlast = f(1)"),
    ("exec-dynamic", "code = 'dyn = 5'", "exec(code)\nafter = 1"),
]
