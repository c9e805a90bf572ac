"""Random cells: ``%%golem --local`` must leave exactly the namespace plain Python leaves.

Hypothesis writes cells from a small grammar over a few ints and lists: assignments, augmented
assignments, in-place list changes, aliases, ``del``, fan-out comprehensions and loops, prints.
Every cell is valid Python that runs without error plainly; the magic must agree on every name,
on which names are one object, and on what was printed.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from magic_shell import text_shell

pytestmark = pytest.mark.timeout(600)

INTS = ("a", "b", "c")
LISTS = ("xs", "ys")
SETUP = "a = 1\nxs = [1, 2]"


@pytest.fixture(scope="module")
def shell():
    with text_shell() as ip:
        yield ip


@st.composite
def cells(draw) -> str:
    ints, lists = {"a"}, {"xs"}  # what SETUP defines
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        options = ["assign", "list", "print"]
        if ints:
            options += ["augment", "del-int", "len"]
        if lists:
            options += ["append", "alias", "fanout", "loop", "sort", "del-list"]
        kind = draw(st.sampled_from(options))
        k = draw(st.integers(0, 4))
        int_name, list_name = draw(st.sampled_from(INTS)), draw(st.sampled_from(LISTS))
        some_int = draw(st.sampled_from(sorted(ints))) if ints else None
        some_list = draw(st.sampled_from(sorted(lists))) if lists else None
        if kind == "assign":
            lines.append(f"{int_name} = {some_int} + {k}" if some_int else f"{int_name} = {k}")
            ints.add(int_name)
        elif kind == "list":
            lines.append(f"{list_name} = [{k}]")
            lists.add(list_name)
        elif kind == "print":
            lines.append(f"print({some_int or some_list or k!r})")
        elif kind == "augment":
            lines.append(f"{some_int} += {k}")
        elif kind == "del-int":
            lines.append(f"del {some_int}")
            ints.discard(some_int)
        elif kind == "len":
            lines.append(f"{int_name} = len({some_list})" if some_list else f"{int_name} = {k}")
            ints.add(int_name)
        elif kind == "append":
            lines.append(f"{some_list}.append({some_int or k})")
        elif kind == "alias":
            lines.append(f"{list_name} = {some_list}")
            lists.add(list_name)
        elif kind == "fanout":
            lines.append(f"{list_name} = [i * {some_int or 1} for i in range({k} + len({some_list}))]")
            lists.add(list_name)
        elif kind == "loop":
            lines.append(f"for i in range({k}):\n    {some_list}.append(i + {some_int or 0})")
            ints.add("i") if k else None
        elif kind == "sort":
            lines.append(f"{some_list}.sort(reverse=True)")
        elif kind == "del-list":
            lines.append(f"del {some_list}")
            lists.discard(some_list)
    return "\n".join(lines)


def plain(cell: str) -> tuple[dict, str]:
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(SETUP, namespace)
        exec(cell, namespace)
    return {k: v for k, v in namespace.items() if k in INTS + LISTS + ("i",)}, printed.getvalue()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cell=cells())
def test_random_cells_leave_the_plain_namespace(shell, cell):
    expected, expected_printed = plain(cell)
    shell.reset()
    shell.run_cell(SETUP).raise_error()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        shell.run_cell_magic("golem", "--local", cell)
    got = {k: v for k, v in shell.user_ns.items() if k in INTS + LISTS + ("i",)}
    # Every name is exactly what plain Python leaves, also a notebook object the cell changes only
    # through an alias (`ys = xs; ys.append(1)`), and the lists that are one object in plain Python
    # are one object with the magic (DESIGN.md section 5: memory sharing is part of the result).
    for name in set(got) | set(expected):
        assert got.get(name) == expected.get(name), cell
    assert {type(v) for v in got.values()} <= {int, list}
    for x in LISTS:
        for y in LISTS:
            if x < y and x in got and y in got:
                assert (got[x] is got[y]) == (expected[x] is expected[y]), cell
    assert [line for line in printed.getvalue().splitlines() if not line.startswith("golem:")] == (
        expected_printed.splitlines()
    ), cell
