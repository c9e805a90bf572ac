"""The cell's dataflow DAG: reads, writes, kinds, edges, fan-outs and serial fallbacks of many small cells."""

from __future__ import annotations

import ast
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golem_jupyter.notebook.cellgraph import (
    PURE_METHODS,
    CellGraph,
    FanOut,
    FunctionFacts,
    Statement,
    analyze,
    function_facts,
    hidden_state,
)


def graph(source: str, **options) -> CellGraph:
    return analyze(source, **options)


def edges(source: str, **options) -> set[tuple[int, int]]:
    return set(analyze(source, **options).edges)


def statement(source: str, index: int = 0, **options) -> Statement:
    return analyze(source, **options).statements[index]


def fanout(source: str, index: int = 0, **options) -> FanOut:
    found = statement(source, index, **options).fanout
    assert found is not None
    return found


def names(*items: str) -> frozenset[str]:
    return frozenset(items)


# ---------------------------------------------------------------------------- edges of small cells

EDGE_CASES = [
    # independent statements
    ("a = 1\nb = 2\nc = 3", set()),
    ("a = f(x)\nb = g(y)\nprint(z)", set()),
    # chains
    ("a = 1\nb = a\nc = b", {(0, 1), (1, 2)}),
    ("a = 1\nb = a + 1\nc = a + b", {(0, 1), (0, 2), (1, 2)}),
    # write after write, write after read, read after write
    ("x = 1\nx = 2", {(0, 1)}),
    ("y = x\nx = 2", {(0, 1)}),
    ("a = x\nb = x\nx = 0", {(0, 2), (1, 2)}),
    ("x = 1\ny = x\nx = 2\nz = x", {(0, 1), (0, 2), (1, 2), (2, 3)}),
    ("x = 1\na = x\nx = 2\nb = x\nx = 3", {(0, 1), (0, 2), (1, 2), (2, 3), (2, 4), (3, 4)}),
    # augmented assignment
    ("x = 0\nx += 1\ny = x", {(0, 1), (1, 2)}),
    ("y = x\nx += 1", {(0, 1)}),
    # del
    ("x = 1\ndel x", {(0, 1)}),
    ("print(x)\ndel x", {(0, 1)}),
    ("x = 1\ndel x\nx = 2", {(0, 1), (1, 2)}),
    ("d = {}\ndel d['k']\nn = len(d)", {(0, 1), (1, 2)}),
    # in-place changes
    ("xs = []\nxs.append(1)\nn = len(xs)", {(0, 1), (1, 2)}),
    ("n = len(xs)\nxs.append(1)", {(0, 1)}),
    ("n = xs.count(1)\nm = xs.index(2)\nk = len(xs)", set()),
    ("cfg.x = 1\ncfg.y = 2", {(0, 1)}),
    ("d[k] = v\nw = d[k]", {(0, 1)}),
    ("np.random.seed(0)\ny = np.sum(x)", {(0, 1)}),
    ("import numpy as np\ny = np.sum(x)\nz = np.mean(x)", {(0, 1), (0, 2)}),
    # comprehensions and generator expressions have their own scope
    ("ys = [x * 2 for x in xs]\nx = 5", set()),
    ("x = 5\nys = [x for x in x]", {(0, 1)}),
    ("k = 3\nm = [[i * k for i in r] for r in rows]", {(0, 1)}),
    ("w = 2\ntotal = sum(v * w for v in vs)", {(0, 1)}),
    ("pairs = {k: v for k, v in items}\nk = 1", set()),
    # compound statements
    ("for x in xs:\n    total += x\ny = x", {(0, 1)}),
    ("if c:\n    a = 1\nelse:\n    a = 2\nprint(a)", {(0, 1)}),
    ("n = 10\nwhile n > 0:\n    n -= 1\nprint(n)", {(0, 1), (1, 2)}),
    ("with open(p) as f:\n    data = f.read()\nprint(data)", {(0, 1)}),
    ("try:\n    r = 1 / 0\nexcept ZeroDivisionError as e:\n    r = None\nprint(r)", {(0, 1)}),
    # definitions order the statements that use them
    ("k = 1\nf = lambda: k\nr = f()", {(0, 2), (1, 2)}),
    ("f = lambda: k\nr = f()\nk = 2", {(0, 1), (1, 2)}),
    ("k = 1\ndef f():\n    return k\nk = 2\ny = f()", {(0, 2), (1, 3), (2, 3)}),
    ("def f():\n    return g() + 1\ndef g():\n    return k\nk = 2\ny = f()", {(0, 3), (1, 3), (2, 3)}),
    ("def f():\n    return g()\ny = f()\ndef g():\n    return 1", {(0, 1), (1, 2)}),
    ("d0 = 1\ndef f(a=d0):\n    return a\nd0 = 2", {(0, 1), (0, 2), (1, 2)}),
]


@pytest.mark.parametrize(("source", "expected"), EDGE_CASES)
def test_edges(source: str, expected: set[tuple[int, int]]) -> None:
    assert edges(source) == expected


def test_the_cells_are_distinct_and_many() -> None:
    assert len({source for source, _ in EDGE_CASES}) == len(EDGE_CASES) >= 35


# ---------------------------------------------------------------------------- independent statements, chains


def test_independent_assignments_read_the_notebook() -> None:
    g = graph("a = f(x)\nb = g(y)")
    assert g.edges == frozenset()
    assert [s.reads for s in g.statements] == [names("f", "x"), names("g", "y")]
    assert [s.writes for s in g.statements] == [names("a"), names("b")]
    assert g.inputs == names("f", "x", "g", "y")
    assert g.outputs == names("a", "b")
    assert g.deleted == frozenset()
    assert g.serial_reason is None


def test_builtins_are_names_like_any_other() -> None:
    g = graph("n = len(range(3))\nprint(n)")
    assert g.statements[0].reads == names("len", "range")
    assert g.inputs == names("len", "range", "print")


def test_chain_helpers() -> None:
    g = graph("a = 1\nb = a\nc = a + b\na = 3")
    assert g.predecessors(2) == {0, 1}
    assert g.predecessors(3) == {0, 1, 2}
    assert g.last_writer("a", 3) == 0
    assert g.last_writer("a", 4) == 3
    assert g.last_writer("b", 1) is None
    assert g.last_writer("zzz", 4) is None
    assert g.inputs == frozenset()
    assert g.effective_reads(2) == names("a", "b")


def test_a_name_read_before_the_cell_writes_it_is_an_input() -> None:
    g = graph("y = x + 1\nx = 0\nz = x")
    assert g.inputs == names("x")
    assert g.outputs == names("x", "y", "z")


def test_an_empty_cell_and_a_cell_of_comments() -> None:
    for source in ["", "# only\n# comments\n", "\n\n"]:
        g = graph(source)
        assert g.statements == ()
        assert g.edges == frozenset()
        assert g.inputs == g.outputs == g.deleted == frozenset()
        assert g.serial_reason is None


# ---------------------------------------------------------------------------- augmented assignment


def test_augmented_assignment_of_a_name_reads_rebinds_and_may_change_it() -> None:
    s = statement("x += 1")  # an array or a list changes in place
    assert (s.reads, s.writes, s.mutates) == (names("x"), names("x"), names("x"))
    assert graph("x += 1").inputs == names("x")


def test_augmented_assignment_of_an_attribute_or_item_changes_the_base() -> None:
    s = statement("x.n += step")
    assert (s.reads, s.writes, s.mutates) == (names("x", "step"), names("x"), names("x"))
    s = statement("x[i] += 1")
    assert (s.reads, s.writes, s.mutates) == (names("x", "i"), names("x"), names("x"))


# ---------------------------------------------------------------------------- del


def test_del_of_a_name_deletes_it() -> None:
    g = graph("del x")
    s = g.statements[0]
    assert (s.reads, s.writes, s.deletes, s.mutates) == (frozenset(), names("x"), names("x"), frozenset())
    assert g.deleted == names("x")
    assert g.outputs == frozenset()
    assert g.inputs == frozenset()


def test_bound_then_deleted_is_deleted_not_an_output() -> None:
    g = graph("x = 1\ny = x\ndel x")
    assert g.deleted == names("x")
    assert g.outputs == names("y")
    assert g.edges == {(0, 1), (0, 2), (1, 2)}


def test_deleted_then_bound_again_is_an_output() -> None:
    g = graph("x = 1\ndel x\nx = 2")
    assert g.deleted == frozenset()
    assert g.outputs == names("x")


def test_del_of_several_names() -> None:
    s = statement("del a, (b, c)")
    assert s.deletes == s.writes == names("a", "b", "c")


def test_del_of_an_item_or_attribute_changes_the_base() -> None:
    for source in ["del x[0]", "del x.a", "del x.a[k]"]:
        s = statement(source)
        assert s.mutates == s.writes == names("x"), source
        assert s.deletes == frozenset()
    g = graph("del x[i]")
    assert g.outputs == names("x")
    assert g.inputs == names("x", "i")


def test_a_conditional_del_is_a_write_not_a_deletion() -> None:
    g = graph("x = 1\nif c:\n    del x")
    assert g.statements[1].writes == names("x")
    assert g.statements[1].deletes == frozenset()
    assert g.deleted == frozenset()
    assert g.outputs == names("x")


# ---------------------------------------------------------------------------- method calls


@pytest.mark.parametrize(
    "source", ["x.append(1)", "x.a.b.update(d)", "x[0].append(1)", "x.sort()", "x.fill(0)", "x.partition(3)"]
)
def test_a_method_call_changes_the_object(source: str) -> None:
    s = statement(source)
    assert "x" in s.reads
    assert s.mutates == s.writes == names("x")


@pytest.mark.parametrize(
    "method",
    ["sort", "fill", "resize", "put", "setfield", "itemset", "partition", "append", "extend", "update", "pop",
     "add", "discard", "remove", "clear", "insert", "reverse", "setdefault", "popitem"],
)  # fmt: skip
def test_in_place_methods_are_not_pure(method: str) -> None:
    assert method not in PURE_METHODS
    assert statement(f"x.{method}()").mutates == names("x")


@pytest.mark.parametrize("method", ["copy", "get", "keys", "mean", "astype", "reshape", "strip", "union", "tolist"])
def test_pure_methods_only_read(method: str) -> None:
    assert method in PURE_METHODS
    s = statement(f"y = x.{method}()")
    assert s.reads == names("x")
    assert s.writes == names("y")
    assert s.mutates == frozenset()


def test_a_method_of_a_call_result_changes_nothing_named() -> None:
    s = statement("s = t.strip().lower()\n")
    assert (s.reads, s.writes) == (names("t"), names("s"))
    assert statement("f(x).append(1)").writes == frozenset()


def test_calls_on_a_module_from_the_notebook_do_not_write_it() -> None:
    s = statement("y = np.sum(x)", modules=names("np"))
    assert (s.reads, s.writes, s.mutates) == (names("np", "x"), names("y"), frozenset())
    assert edges("np.random.seed(0)\ny = np.sum(x)", modules=names("np")) == set()
    assert statement("np.x = 1", modules=names("np")).writes == frozenset()


def test_calls_on_an_unknown_name_write_it() -> None:
    s = statement("y = la.solve(a, b)")
    assert s.writes == names("la", "y")
    assert s.mutates == names("la")
    assert statement("y = np.sum(x)").writes == names("y")  # `sum` is pure on any object


def test_calls_on_a_module_imported_in_the_cell_do_not_write_it() -> None:
    g = graph("import numpy as np\ny = np.sum(x)\nnp.random.seed(1)")
    assert [s.writes for s in g.statements] == [names("np"), names("y"), frozenset()]
    assert g.edges == {(0, 1), (0, 2)}
    assert g.outputs == names("np", "y")


def test_a_module_name_rebound_is_data_again() -> None:
    g = graph("np = make()\nnp.update(1)", modules=names("np"))
    assert g.statements[1].mutates == names("np")
    assert g.edges == {(0, 1)}


def test_an_import_with_a_fallback_keeps_the_module() -> None:
    g = graph("try:\n    import numpy as np\nexcept ImportError:\n    np = None\ny = np.zeros(3)")
    assert g.statements[1].writes == names("y")


# ---------------------------------------------------------------------------- attribute and item assignment


@pytest.mark.parametrize(
    ("source", "reads"),
    [("obj.a = 1", names("obj")), ("d[k] = v", names("d", "k", "v")), ("x.a[1] = 2", names("x")),
     ("x[i].b = y", names("x", "i", "y"))],
)  # fmt: skip
def test_attribute_and_item_assignment_change_the_base(source: str, reads: frozenset[str]) -> None:
    s = statement(source)
    base = next(iter(s.mutates))
    assert s.mutates == s.writes == names(base)
    assert s.reads == reads


def test_item_assignment_into_a_fresh_container() -> None:
    g = graph("d = {}\nd['a'] = 1\nd['b'] = 2\nprint(d)")
    assert g.edges == {(0, 1), (1, 2), (2, 3)}
    assert g.inputs == names("print")


# ---------------------------------------------------------------------------- comprehension scope


def test_a_comprehension_target_does_not_leak() -> None:
    g = graph("ys = [x * 2 for x in xs]\nprint(x)")
    assert g.statements[0].writes == names("ys")
    assert g.statements[0].reads == names("xs")
    assert g.edges == frozenset()
    assert "x" in g.inputs


def test_the_first_iterable_is_read_in_the_enclosing_scope() -> None:
    assert statement("ys = [x for x in x]").reads == names("x")
    assert statement("ys = [y for x in xs for y in x]").reads == names("xs")
    assert statement("ys = [y for x in xs for y in x if y > t]").reads == names("xs", "t")


def test_generator_expressions_read_globals_now() -> None:
    s = statement("total = sum(v * w for v in vs if v)")
    assert s.reads == names("sum", "vs", "w")
    assert s.writes == names("total")
    assert statement("g = (x for x in xs)").reads == names("xs")


def test_set_and_dict_comprehensions() -> None:
    assert statement("s = {f(v) for v in vs}").reads == names("f", "vs")
    s = statement("d = {k: v * n for k, v in pairs}")
    assert (s.reads, s.writes) == (names("n", "pairs"), names("d"))


# ---------------------------------------------------------------------------- lambdas and defs


def test_lambda_assignment_is_a_definition_with_deferred_reads() -> None:
    s = statement("f = lambda v, w=d: v + w + k")
    assert s.kind == "definition"
    assert (s.reads, s.writes, s.deferred_reads) == (names("d"), names("f"), names("k"))


def test_chained_lambda_assignment() -> None:
    s = statement("f = g = lambda: 0")
    assert s.kind == "definition"
    assert s.writes == names("f", "g")


def test_lambda_stored_in_a_container_is_compute() -> None:
    s = statement("fs[0] = lambda: k")
    assert s.kind == "compute"
    assert s.mutates == names("fs")


def test_a_lambda_called_by_its_statement_reads_at_once() -> None:
    g = graph("k = 1\nys = sorted(xs, key=lambda v: v[k])")
    assert g.statements[1].reads == names("k", "sorted", "xs")
    assert g.edges == {(0, 1)}


def test_lambdas_kept_in_a_container_read_when_called() -> None:
    g = graph("handlers = {'a': lambda: k}\nk = 2\nr = handlers['a']()")
    assert g.effective_reads(2) == names("handlers", "k")
    assert g.edges == {(0, 1), (0, 2), (1, 2)}


def test_def_time_reads_and_deferred_reads() -> None:
    source = "@cache(size)\ndef f(a: T = d0, *args: A, b=d1, **kw: K) -> R:\n    return a + k + g(b)\n"
    s = statement(source)
    assert s.kind == "definition"
    assert s.reads == names("cache", "size", "T", "d0", "A", "d1", "K", "R")
    assert s.deferred_reads == names("k", "g")
    assert s.writes == names("f")
    assert graph(source).inputs == names("cache", "size", "T", "d0", "A", "d1", "K", "R")


def test_deferred_reads_become_inputs_where_the_function_is_used() -> None:
    g = graph("def f():\n    return k\nk = 1\ny = f()\nz = f()")
    assert g.inputs == frozenset()
    g = graph("def f():\n    return k\ny = f()\nk = 1")
    assert g.inputs == names("k")
    assert g.edges == {(0, 1), (1, 2)}


def test_transitive_deferred_reads_through_two_cell_functions() -> None:
    g = graph("def f():\n    return g() + 1\ndef g():\n    return k\nk = 2\ny = f()")
    assert g.statements[0].deferred_reads == names("g")
    assert g.statements[1].deferred_reads == names("k")
    assert g.effective_reads(3) == names("f", "g", "k")
    assert g.effective_reads(0) == frozenset()
    assert g.inputs == frozenset()


def test_recursion_terminates() -> None:
    g = graph("def f(n):\n    return f(n - 1) if n else k\ny = f(3)")
    assert g.effective_reads(1) == names("f", "k")
    g = graph(
        "def even(n):\n    return n == 0 or odd(n - 1)\ndef odd(n):\n    return n != 0 and even(n - 1)\nr = even(4)"
    )
    assert g.effective_reads(2) == names("even", "odd")
    assert g.edges == {(0, 2), (1, 2)}


def test_locals_and_parameters_of_functions_are_not_global() -> None:
    s = statement(
        "def f(a, *rest, b=1, **kw):\n    c = a + len(rest)\n    for i in kw:\n        c += i\n    return c + b"
    )
    assert s.deferred_reads == names("len")
    assert s.writes == names("f")


def test_nested_functions_and_nonlocal() -> None:
    source = (
        "def outer():\n    c = 0\n    def inner(step=s):\n        nonlocal c\n        c += step\n"
        "        return c + g0\n    return inner\n"
    )
    s = statement(source)
    assert (s.reads, s.deferred_reads) == (frozenset(), names("s", "g0"))


def test_global_declared_in_a_function_is_a_deferred_read() -> None:
    g = graph("def setter(v):\n    global counter\n    counter = v\nsetter(3)")
    assert g.statements[0].deferred_reads == names("counter")
    assert g.statements[0].writes == names("setter")
    assert g.effective_reads(1) == names("setter", "counter")
    assert g.serial_reason is None


def test_callables_from_the_notebook() -> None:
    callables = {"helper": names("scale", "inner"), "inner": names("offset")}
    g = graph("y = helper(x)", callables=callables)
    assert g.effective_reads(0) == names("helper", "x", "scale", "inner", "offset")
    assert g.inputs == names("helper", "x", "scale", "inner", "offset")
    assert edges("scale = 2\ny = helper(x)", callables=callables) == {(0, 1)}
    assert edges("y = helper(x)\noffset = 0", callables=callables) == {(0, 1)}


def test_a_cell_definition_hides_the_notebook_callable() -> None:
    g = graph("def helper(v):\n    return v\ny = helper(x)", callables={"helper": names("scale")})
    assert g.effective_reads(1) == names("helper", "x")


def test_class_definition() -> None:
    source = (
        "class A(Base, metaclass=Meta):\n    size = k\n    double = size * 2\n"
        "    def grow(self, by=size):\n        return self.size + step\n"
        "obj = A()\n"
    )
    g = graph(source)
    a = g.statements[0]
    assert a.kind == "definition"
    assert a.reads == names("Base", "Meta", "k")
    assert a.deferred_reads == names("step")
    assert a.writes == names("A")
    assert g.effective_reads(1) == names("A", "step")
    assert g.edges == {(0, 1)}


def test_a_class_body_reads_the_global_until_it_binds_the_name() -> None:
    s = statement("class K:\n    n = n + 1\n    sq = [i * n for i in range(n)]\n")
    assert s.reads == names("n", "range")  # `n + 1` and the element's `n` are the global; `range(n)` is K's


def test_a_def_inside_an_if_is_compute() -> None:
    s = statement("if fast:\n    def f():\n        return k\n")
    assert s.kind == "compute"
    assert s.writes == names("f")
    assert s.reads == names("fast", "k")
    assert s.deferred_reads == names("k")


# ---------------------------------------------------------------------------- walrus, with, try, loops, match


def test_walrus_at_the_top_level() -> None:
    g = graph("if (n := len(a)) > 10:\n    print(n)\nm = n")
    s = g.statements[0]
    assert s.writes == names("n")
    assert s.reads == names("len", "a", "print")
    assert g.edges == {(0, 1)}


def test_walrus_in_a_comprehension_binds_in_the_cell() -> None:
    g = graph("ys = [(last := v) for v in vs]\nprint(last)")
    assert g.statements[0].writes == names("ys", "last")
    assert g.statements[0].fanout is None
    assert g.edges == {(0, 1)}


def test_a_walrus_that_may_not_run_is_still_a_read_later() -> None:
    s = statement("y = c or (n := 1)\nz = n")
    assert s.writes == names("y", "n")
    assert statement("y = (c or (n := 1)) + n").reads == names("c", "n")


def test_with_as() -> None:
    s = statement("with open(p) as f, lock:\n    data = f.read()")
    assert s.reads == names("open", "p", "lock")
    assert s.writes == names("f", "data")


def test_try_except_as() -> None:
    g = graph("try:\n    r = 1 / x\nexcept ZeroDivisionError as e:\n    print(e)\n    r = None\nfinally:\n    done = r")
    s = g.statements[0]
    assert s.writes == names("r", "e", "done")
    assert s.reads == names("x", "ZeroDivisionError", "print", "r")  # `finally` may run without `r`


def test_for_loop_target_is_bound_inside_the_loop() -> None:
    s = statement("for i, row in enumerate(rows):\n    total = total + row[i]\nelse:\n    last = i")
    assert s.writes == names("i", "row", "total", "last")
    assert s.reads == names("enumerate", "rows", "total", "i")  # `else` may run with no iteration


def test_if_branches_bind_for_what_follows_only_when_both_do() -> None:
    assert statement("if c:\n    a = 1\nelse:\n    a = 2\nprint(a)").reads == names("c")
    assert statement("if c:\n    a = 1\n    b = a\nelse:\n    b = a").reads == names("c", "a")
    assert statement("while n:\n    n -= 1\n    m = n").reads == names("n")


def test_match_statement_captures() -> None:
    source = (
        "match cmd:\n    case [first, *rest]:\n        pass\n    case {'k': v, **others}:\n        pass\n"
        "    case Point(x=px) as whole if px > limit:\n        pass\n    case Color.RED:\n        hit = True\n"
    )
    s = statement(source)
    assert s.writes == names("first", "rest", "v", "others", "px", "whole", "hit")
    assert s.reads == names("cmd", "Point", "limit", "Color")


def test_annotated_assignment() -> None:
    s = statement("x: int")
    assert (s.writes, s.reads) == (frozenset(), names("int"))
    s = statement("y: list[int] = make()")
    assert (s.writes, s.reads) == (names("y"), names("list", "int", "make"))
    assert statement("obj.a: int = 1").mutates == names("obj")
    assert statement("obj.a: int").writes == frozenset()


def test_starred_and_chained_assignment() -> None:
    s = statement("a, *b = f()")
    assert (s.reads, s.writes) == (names("f"), names("a", "b"))
    s = statement("a = b = f()")
    assert (s.reads, s.writes) == (names("f"), names("a", "b"))
    s = statement("[a, (b, c)] = t")
    assert s.writes == names("a", "b", "c")


# ---------------------------------------------------------------------------- imports


def test_imports() -> None:
    g = graph("import a.b\nimport a.b as c\nfrom a import b as d\nfrom . import e\nimport os, sys")
    assert [s.writes for s in g.statements] == [names("a"), names("c"), names("d"), names("e"), names("os", "sys")]
    assert all(s.kind == "definition" and s.reads == frozenset() for s in g.statements)
    assert g.edges == frozenset()
    assert g.outputs == names("a", "c", "d", "e", "os", "sys")


def test_an_import_orders_the_statements_that_use_it() -> None:
    assert edges("y = os.getcwd()\nimport os\nz = os.sep") == {(0, 1), (1, 2)}


def test_kinds() -> None:
    g = graph("import m\nfrom m import f\ndef g(): pass\nasync def h(): pass\nclass C: pass\nk = lambda: 0\nx = 1")
    assert [s.kind for s in g.statements] == ["definition"] * 6 + ["compute"]


# ---------------------------------------------------------------------------- serial cells


@pytest.mark.parametrize(
    ("source", "word"),
    [("from m import *\na = 1\nb = 2", "import *"), ("exec('a = 1')\nb = 2\nc = 3", "exec"),
     ("a = eval('1')\nb = 2\nc = 3", "eval"), ("a = 1\nns = locals()\nb = 2", "locals"),
     ("a = 1\nns = globals()\nb = 2", "globals"), ("a = 1\nns = vars()\nb = 2", "vars"),
     ("global q\nq = 1\nr = 2", "global"), ("a = 1\nb = 2\nget_ipython().run_cell('c = 3')", "get_ipython"),
     ("def f():\n    return eval('x')\na = 1\nb = 2", "eval"),
     ("def f():\n    return locals()\na = 1\nb = 2", "locals")],
)  # fmt: skip
def test_serial_cells_run_as_a_chain(source: str, word: str) -> None:
    g = graph(source)
    assert g.serial_reason is not None
    assert word in g.serial_reason
    assert g.serial_reason.endswith("so the cell runs as one serial chain.")
    assert g.edges == {(0, 1), (1, 2)}


def test_a_serial_cell_still_knows_its_names_and_has_no_fanout() -> None:
    g = graph("ys = [f(x) for x in xs]\nexec(code)\ndel t")
    assert g.statements[0].fanout is None
    assert g.statements[0].writes == names("ys")
    assert g.inputs == names("f", "xs", "exec", "code")
    assert g.outputs == names("ys")
    assert g.deleted == names("t")


def test_vars_of_an_object_and_a_shadowed_eval_are_fine() -> None:
    assert graph("d = vars(obj)").serial_reason is None
    assert graph("def f(eval):\n    return eval(1)").serial_reason is None
    assert graph("model.eval()").serial_reason is None


# ---------------------------------------------------------------------------- fan-out


def test_comprehension_fanout() -> None:
    s = statement("ys = [f(x, k) for x in xs if x > t]")
    fan = s.fanout
    assert fan is not None
    assert fan.form == "comprehension"
    assert fan.name == "ys"
    assert ast.unparse(fan.target) == "x" and isinstance(fan.target.ctx, ast.Store)
    assert ast.unparse(fan.iterable) == "xs"
    assert ast.unparse(fan.element) == "f(x, k)"
    assert fan.index is None
    assert [ast.unparse(c) for c in fan.conditions] == ["x > t"]
    assert fan.iterable_reads == names("xs")
    assert fan.element_reads == names("f", "k", "t")
    assert fan.target_names == names("x")
    assert (s.reads, s.writes) == (names("xs", "f", "k", "t"), names("ys"))


def test_comprehension_fanout_may_replace_its_iterable() -> None:
    fan = fanout("xs = [x.mean() for x in xs]")
    assert fan.iterable_reads == names("xs")
    assert fan.element_reads == frozenset()


def test_append_fanout_with_a_tuple_target() -> None:
    s = statement("for i, x in enumerate(xs):\n    out.append(g(x, i, w))")
    fan = s.fanout
    assert fan is not None
    assert (fan.form, fan.name) == ("append", "out")
    assert isinstance(fan.target, ast.Tuple)
    assert ast.unparse(fan.iterable) == "enumerate(xs)"
    assert ast.unparse(fan.element) == "g(x, i, w)"
    assert fan.index is None and fan.conditions == ()
    assert fan.iterable_reads == names("enumerate", "xs")
    assert fan.element_reads == names("g", "w")
    assert fan.target_names == names("i", "x")
    assert s.writes == names("out", "i", "x")
    assert s.mutates == names("out")
    assert s.reads == names("out", "enumerate", "xs", "g", "w")


def test_setitem_fanout() -> None:
    s = statement("for (i, (a, b)) in zip(idx, pairs):\n    res[i, key] = np.dot(a, b)", modules=names("np"))
    fan = s.fanout
    assert fan is not None
    assert (fan.form, fan.name) == ("setitem", "res")
    assert ast.unparse(fan.index) == "(i, key)"
    assert ast.unparse(fan.element) == "np.dot(a, b)"
    assert fan.iterable_reads == names("zip", "idx", "pairs")
    assert fan.element_reads == names("key", "np")
    assert fan.target_names == names("i", "a", "b")
    assert s.writes == names("res", "i", "a", "b")
    assert s.mutates == names("res")


def test_fanout_edges_are_those_of_the_statement() -> None:
    g = graph("out = []\nfor x in xs:\n    out.append(f(x))\nn = len(out)")
    assert g.statements[1].fanout is not None
    assert g.edges == {(0, 1), (1, 2)}


@pytest.mark.parametrize(
    "source",
    [
        "ys = [x * y for x in xs for y in zs]",  # two generators
        "ys = [ys[-1] + x for x in xs]",  # reads the container
        "ys = [x for x in xs if x not in ys]",  # a condition reads the container
        "ys = [(last := x) for x in xs]",  # walrus in the element
        "ys = [acc.append(x) for x in xs]",  # changes a global
        "ys = [x.pop() for x in xs]",  # changes the elements of the iterable
        "ys = {f(x) for x in xs}",  # not a list
        "ys = zs = [f(x) for x in xs]",  # two targets
        "ys[0] = [f(x) for x in xs]",  # not a plain name
        "ys = [f(x) for x.a in xs]",  # the target is not names
        "for x in xs:\n    out.append(f(x))\nelse:\n    done = True",  # loop with else
        "for x in xs:\n    y = f(x)\n    out.append(y)",  # two statements
        "for x in xs:\n    out.append(out[-1] + x)",  # reads the container
        "for x in out:\n    out.append(x)",  # iterates over the container
        "for x in xs:\n    out.append(total.add(x))",  # changes a global
        "for out in xs:\n    out.append(1)",  # the target is the container
        "for x in xs:\n    out.extend(f(x))",  # not append
        "for x in xs:\n    out.append(x, 1)",  # not one argument
        "for x in xs:\n    out[:1] = [x]",  # slice assignment can change the length
        "for x in (ys := f()):\n    out.append(x)",  # walrus in the iterable
        "for x in xs:\n    out.append((y := x))",  # walrus in the element
        "for x in xs:\n    out[x] = y = f(x)",  # two targets
    ],
)
def test_near_misses_do_not_fan_out(source: str) -> None:
    assert statement(source).fanout is None


def test_setitem_at_a_global_index_still_fans_out() -> None:
    fan = fanout("for x in xs:\n    out[i] = x")
    assert (fan.form, fan.element_reads, ast.unparse(fan.index)) == ("setitem", names("i"), "i")


def test_fanout_element_may_call_pure_methods_and_module_functions() -> None:
    assert fanout("ys = [np.sqrt(x).round() for x in xs]", modules=names("np")).element_reads == names("np")
    assert statement("ys = [np.sqrt(x) for x in xs]").fanout is None  # np is not known to be a module


# ---------------------------------------------------------------------------- line numbers and syntax errors


def test_first_line_shifts_the_nodes() -> None:
    g = graph("a = 1\n\nb = a\n", first_line=10, filename="<golem-cell>")
    assert [s.node.lineno for s in g.statements] == [10, 12]
    assert g.statements[1].node.end_lineno == 12
    code = compile(ast.Module(body=[g.statements[1].node], type_ignores=[]), "<golem-cell>", "exec")
    with pytest.raises(NameError) as raised:
        exec(code, {})
    frame = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno) == ("<golem-cell>", 12)


def test_a_syntax_error_is_reported_at_the_cell_line() -> None:
    with pytest.raises(SyntaxError) as raised:
        analyze("a = 1\nb = (\n", first_line=7, filename="<golem-cell>")
    assert raised.value.lineno == 8
    assert raised.value.filename == "<golem-cell>"
    assert raised.value.args[1][1] == 8
    with pytest.raises(SyntaxError) as raised:
        analyze("a = 1\ndef f(:\n    pass\n", first_line=3)
    assert raised.value.lineno == 4


@pytest.mark.parametrize(
    ("source", "word", "line"),
    [("return 1", "return", 1), ("x = 1\nyield x", "yield", 2), ("x = 1\n\ny = yield from g()", "yield from", 3),
     ("await f()", "await", 1), ("if c:\n    return", "return", 2), ("class A:\n    return 1", "return", 2),
     ("async for x in y:\n    pass", "async for", 1), ("async with a:\n    pass", "async with", 1),
     ("ys = [x async for x in y]", "async for", 1), ("ys = [await x for x in y]", "await", 1)],
)  # fmt: skip
def test_top_level_return_yield_and_await_are_syntax_errors(source: str, word: str, line: int) -> None:
    with pytest.raises(SyntaxError) as raised:
        analyze(source, first_line=20, filename="<golem-cell>")
    assert f"`{word}`" in raised.value.msg
    assert raised.value.lineno == line + 19
    assert raised.value.filename == "<golem-cell>"
    assert raised.value.offset is not None


def test_return_yield_and_await_inside_functions_are_fine() -> None:
    g = graph("def f():\n    yield 1\n    return 2\nasync def g():\n    await h()\nk = lambda: (yield)")
    assert [s.kind for s in g.statements] == ["definition"] * 3


# ---------------------------------------------------------------------------- a property: any order the DAG allows


VARIABLES = ("a", "b", "c", "d")
TEMPLATES = (
    "{t} = {x} + {y}",
    "{t} += {x}",
    "{t} = len(xs) + {x}",
    "xs.append({x})",
    "xs = xs + [{x}]",
    "del xs[0]",
    "{t} = sum(v * {x} for v in xs)",
    "if {x} > {y}:\n    {t} = {y}",
)

statements_strategy = st.lists(
    st.tuples(st.sampled_from(TEMPLATES), *[st.sampled_from(VARIABLES)] * 3).map(
        lambda p: p[0].format(t=p[1], x=p[2], y=p[3])
    ),
    min_size=1,
    max_size=9,
)


@settings(max_examples=150, deadline=None)
@given(statements_strategy, st.randoms(use_true_random=False))
def test_every_order_the_edges_allow_gives_the_same_result(lines: list[str], random) -> None:
    source = "\n".join(lines)
    g = analyze(source)
    n = len(g.statements)
    assert all(0 <= i < j < n for i, j in g.edges)
    for j, s in enumerate(g.statements):
        for name in g.effective_reads(j) | s.writes:
            writer = g.last_writer(name, j)
            assert writer is None or (writer, j) in g.edges
    start = {name: 1 for name in VARIABLES} | {"xs": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
    expected = dict(start, xs=list(start["xs"]))
    exec(compile(source, "<cell>", "exec"), expected)
    done: list[int] = []
    while len(done) < n:
        ready = [j for j in range(n) if j not in done and g.predecessors(j) <= set(done)]
        done.append(random.choice(ready))
    actual = dict(start, xs=list(start["xs"]))
    for j in done:
        exec(compile(ast.Module(body=[g.statements[j].node], type_ignores=[]), "<cell>", "exec"), actual)
    assert {k: actual.get(k) for k in [*VARIABLES, "xs"]} == {k: expected.get(k) for k in [*VARIABLES, "xs"]}


# ---------------------------------------------------------------------------- functions that write, hidden state, views

NUMPY = {"np": "numpy", "random": "random"}


def test_a_function_that_assigns_a_global_writes_it_where_it_is_called() -> None:
    g = graph("def bump():\n    global g\n    g += 1\n    return g\na = bump()\nb = bump()")
    assert g.statements[0].deferred_writes == names("g")
    assert g.statements[0].writes == names("bump")
    assert [s.indirect_writes for s in g.statements[1:]] == [names("g"), names("g")]
    assert g.statements[2].writes == names("b", "g")
    assert (1, 2) in g.edges
    assert g.outputs == names("a", "b", "bump", "g")


def test_a_function_that_changes_a_global_in_place_changes_it_where_it_is_called() -> None:
    g = graph("def add(v):\n    log.append(v)\nadd(1)\nadd(2)")
    assert g.statements[0].deferred_mutates == names("log")
    assert [s.mutates for s in g.statements[1:]] == [names("log"), names("log")]
    assert g.edges == {(0, 1), (0, 2), (1, 2)}


def test_notebook_functions_write_what_their_facts_say() -> None:
    facts = FunctionFacts(reads=names("g", "np"), writes=names("g"), hidden=names("numpy.random"))
    g = graph("y = f(2)\nz = f(3)\nw = [f(v) for v in vs]", callables={"f": facts})
    assert [s.indirect_writes for s in g.statements] == [names("g")] * 3
    assert all(s.hidden == names("numpy.random") for s in g.statements)
    assert g.statements[2].fanout is None  # the elements would each change their own g
    assert g.edges == {(0, 1), (1, 2)}


def test_function_facts_of_a_definition() -> None:
    tree = ast.parse("def f(v):\n    global g\n    g = v\n    out.append(v)\n    return np.random.rand() + k")
    facts = function_facts(tree.body[0], {"np": "numpy"})
    assert facts.writes == names("g", "out")
    assert facts.mutates == names("out")
    assert facts.hidden == names("numpy.random")
    assert facts.reads >= names("g", "out", "np", "k")


@pytest.mark.parametrize(
    ("path", "state"),
    [("random.seed", "random"), ("random.Random", None), ("numpy.random.choice", "numpy.random"),
     ("numpy.random.default_rng", None), ("numpy.seterr", "numpy settings"), ("numpy.sum", None),
     ("os.chdir", "the process environment"), ("os.environ.update", "the process environment"),
     ("os.environ.get", None), ("matplotlib.pyplot.plot", "matplotlib.pyplot")],
)  # fmt: skip
def test_hidden_state_of_library_callables(path: str, state: str | None) -> None:
    assert hidden_state(path) == state


def test_calls_into_hidden_state_keep_their_order() -> None:
    g = graph("np.random.seed(0)\nx = np.random.choice(5, 3)\ny = np.sum(z)\nr = random.random()", modules=NUMPY)
    assert [s.hidden for s in g.statements] == [
        names("numpy.random"),
        names("numpy.random"),
        frozenset(),
        names("random"),
    ]
    assert g.edges == {(0, 1)}
    assert all(not s.writes & names("np", "random") for s in g.statements)


def test_the_cells_own_imports_say_which_module_a_name_holds() -> None:
    g = graph("import numpy as np\nfrom random import shuffle\nnp.random.seed(1)\nshuffle(xs)")
    assert g.statements[2].hidden == names("numpy.random")
    assert (g.statements[3].hidden, g.statements[3].mutates) == (names("random"), names("xs"))


def test_a_barrier_comes_after_everything_before_it_and_before_everything_after_it() -> None:
    g = graph("a = 1\nb = 2\nnp.seterr(all='raise')\nc = 3\nd = 4", modules=NUMPY)
    assert g.barriers == {2}
    assert g.edges == {(0, 2), (1, 2), (2, 3), (2, 4)}
    s = statement("import os\nos.environ['K'] = 'v'", 1)
    assert (s.hidden, s.writes) == (names("the process environment"), frozenset())
    assert statement("np.x = 1", modules=NUMPY).hidden == names("module state")


@pytest.mark.parametrize(
    ("source", "changed"),
    [("np.add.at(counts, i, 1)", "counts"), ("np.copyto(dst, src)", "dst"), ("np.multiply(a, b, out=c)", "c"),
     ("heapq.heappush(h, 3)", "h"), ("rng.shuffle(d)", "d"), ("np.divide(a, b, out=(q,))", "q")],
)  # fmt: skip
def test_library_functions_that_change_an_argument_write_it(source: str, changed: str) -> None:
    s = statement(source, modules={**NUMPY, "heapq": "heapq"})
    assert changed in s.mutates and changed in s.writes


@pytest.mark.parametrize(
    ("source", "bases"),
    [("b = a", {"a"}), ("b = c = a", {"a"}), ("sub = x[:2, ::2]", {"x"}), ("t = x.T", {"x"}),
     ("r = x.reshape(2, -1)", {"x"}), ("top, bottom = np.vsplit(x, [2])", {"x"}), ("pair = (x, y)", {"x", "y"}),
     ("row = x[i + 1]", {"x"}), ("v = x.T.reshape(n, m)[0]", {"x"}), ("d = {'a': x}", {"x"}),
     ("w = model.weights", {"model"}), ("c = a if flag else b", {"a", "b"}), ("c = a or b", {"a", "b"})],
)  # fmt: skip
def test_statements_that_only_make_views_or_aliases(source: str, bases: set[str]) -> None:
    assert statement(source, modules=NUMPY).view_of == frozenset(bases)


@pytest.mark.parametrize(
    "source",
    ["x = 1", "b = a + 1", "sub = x[f(i)]", "r = x.copy()", "b = np.vsplit(f(x), 2)", "b.c = a", "b = a.mean()",
     "s = x[lookup()]", "b = [a for a in xs]", "p = np.pi", "c = a if f() else b"],
)  # fmt: skip
def test_statements_that_compute_are_not_views(source: str) -> None:
    assert statement(source, modules=NUMPY).view_of is None


def test_exec_of_a_literal_writes_what_the_literal_binds() -> None:
    g = graph("exec('made = base * 2\\nlog.append(made)')\nnext_ = made + 1")
    assert g.serial_reason is not None and not g.serial_in_kernel
    assert g.statements[0].writes == names("made", "log")
    assert g.statements[0].reads >= names("exec", "base", "log")
    assert g.outputs == names("made", "log", "next_")


def test_namespace_introspection_runs_in_the_kernel_and_a_star_import_is_marked() -> None:
    assert graph("n = len(globals())").serial_in_kernel
    assert graph("get_ipython().run_cell('x = 1')").serial_in_kernel
    assert not graph("exec('x = 1')").serial_in_kernel
    g = graph("from math import *\nr = sqrt(2)")
    assert [s.star_import for s in g.statements] == [True, False]


def test_a_function_that_changes_a_parameter_changes_the_argument() -> None:
    g = graph("def norm(a, b=None, *, c=None):\n    a /= a.sum()\n    c.append(1)\nnorm(x)\nnorm(y, c=z)\nq = 1")
    assert g.statements[0].changed_params == (("a", "b", "c"), names("a", "c"))
    assert g.statements[1].mutates == names("x")
    assert g.statements[2].mutates == names("y", "z")
    facts = FunctionFacts(params=("v",), changed_params=names("v"))
    assert statement("f(data[0])", callables={"f": facts}).mutates == names("data")
    assert graph("ys = [f(v) for v in vs]", callables={"f": facts}).statements[0].fanout is None
