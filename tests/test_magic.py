"""``%%golem`` in a real IPython shell: on a local cluster and on the devnet market.

Every cell of :mod:`magic_cells` is run three ways (plainly, with ``--local``, on the market)
and must leave the same namespace. Errors, options, output and receipts are checked against
the same real processes (a subprocess Dask scheduler and workers; the embedded chain and
provider agents).
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
from IPython.core.error import UsageError
from magic_cells import CELLS
from magic_shell import text_shell
from marketkit import assert_paid_as_metered, local_market

from golem_jupyter.amounts import format_wei_exact
from golem_jupyter.chain import Offer, Wallet
from golem_jupyter.chain.types import NATIVE, new_id
from golem_jupyter.errors import BudgetExceeded, GolemError, MarketError
from golem_jupyter.notebook.execution import RemoteTraceback

pytestmark = pytest.mark.timeout(300)

TOKEN = "0xE5e5E5E5e5e5E5E5E5E5e5E5e5e5e5E5e5e5e5e5"  # an ERC-20 address (checksummed) an offer is priced in


@pytest.fixture(scope="module")
def shell():
    with text_shell() as ip:
        yield ip


@pytest.fixture(scope="module")
def market(shell, tmp_path_factory):
    with local_market(tmp_path_factory.mktemp("magic-market"), providers=2) as market:
        shell.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 2 --budget 0.05")
        yield market
        shell.run_line_magic("golem", "close")


def fresh(shell, setup: str = "") -> dict:
    shell.reset()
    if setup:
        result = shell.run_cell(setup)
        result.raise_error()
    return shell.user_ns


def user_names(namespace: dict, shell=None) -> dict:
    hidden = set(shell.user_ns_hidden) if shell is not None else set()
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in hidden and k not in ("In", "Out", "exit", "quit", "get_ipython")
    }


def plain(setup: str, cell: str) -> dict:
    namespace: dict = {"__name__": "__main__"}
    exec(compile(setup, "<setup>", "exec"), namespace)
    exec(compile(cell, "<cell>", "exec"), namespace)
    return user_names(namespace)


def same(a, b, path: str = "") -> None:
    """Assert that two values are the same value of the same type (notebook classes by name)."""
    assert type(a).__name__ == type(b).__name__, f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, (types.FunctionType, types.ModuleType, type)):
        assert a.__name__ == b.__name__, path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif hasattr(a, "__dict__") and type(a).__module__ == "__main__":
        same(vars(a), vars(b), f"{path}.__dict__")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def golem(shell, setup: str, cell: str, line: str) -> dict:
    fresh(shell, setup)
    shell.run_cell_magic("golem", line, cell)
    return user_names(shell.user_ns, shell)


@pytest.mark.parametrize(("setup", "cell"), [c[1:] for c in CELLS], ids=[c[0] for c in CELLS])
def test_local_cluster_leaves_the_plain_namespace(shell, setup, cell):
    expected = plain(setup, cell)
    got = golem(shell, setup, cell, "--local")
    same(got, expected)


def test_every_cell_on_the_market_leaves_the_plain_namespace(shell, market):
    for name, setup, cell in CELLS:
        expected = plain(setup, cell)
        try:
            got = golem(shell, setup, cell, "")
        except Exception as error:
            raise AssertionError(f"cell {name!r} failed on the market: {error!r}") from error
        same(got, expected, name)


# ------------------------------------------------------------------ output and errors


def test_printed_output_appears_in_cell_order(shell, capsys):
    fresh(shell)
    shell.run_cell_magic("golem", "--local", "print('first')\nx = [print(i) for i in range(3)]\nprint('last')")
    out = capsys.readouterr().out
    assert out.index("first") < out.index("0\n1\n2\n") < out.index("last")


def test_syntax_error_has_the_cell_line_numbers(shell):
    fresh(shell)
    with pytest.raises(SyntaxError) as raised:
        shell.run_cell_magic("golem", "--local", "a = 1\nb = (\nc = 3")
    assert raised.value.lineno == 3  # line 1 of the notebook cell is %%golem
    assert raised.value.filename.startswith("<golem-cell-")


def test_task_exception_is_raised_with_its_type_and_the_cell_traceback(shell):
    ns = fresh(shell, "keep = 'old'")
    with pytest.raises(ZeroDivisionError) as raised:
        shell.run_cell_magic("golem", "--local", "keep = 'new'\nzero = 0\nboom = 1 / zero")
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "line 4" in cause.text and "boom = 1 / zero" in cause.text
    assert ns["keep"] == "old" and "zero" not in ns  # never a half-updated namespace


def test_notebook_exception_class_comes_back(shell):
    fresh(shell, "class Oops(Exception):\n    pass")
    with pytest.raises(Exception) as raised:
        shell.run_cell_magic("golem", "--local", "raise Oops('bad input', 3)")
    assert type(raised.value) is shell.user_ns["Oops"]
    assert raised.value.args == ("bad input", 3)


def test_definitions_are_undone_when_the_graph_fails(shell):
    ns = fresh(shell)
    with pytest.raises(ValueError):
        shell.run_cell_magic("golem", "--local", "import math\ndef f():\n    return 1\nx = int('nope')")
    assert "f" not in ns and "math" not in ns


def test_unknown_option_shows_usage(shell):
    with pytest.raises(UsageError) as raised:
        shell.run_cell_magic("golem", "--frobnicate", "x = 1")
    assert "usage" in str(raised.value).lower() or "unrecognized" in str(raised.value).lower()


def test_unknown_line_command_lists_commands(shell):
    with pytest.raises(UsageError, match="connect") as raised:
        shell.run_line_magic("golem", "launch")
    message = str(raised.value)
    assert "'launch'" in message
    for name in SUBCOMMANDS:
        assert f"%golem {name} [-h]" in message, name
    assert "%%golem [--gpu]" in message


SUBCOMMANDS = ("connect", "status", "providers", "budget", "close")
CELL_OPTIONS = "--gpu --providers --budget --max-price --verify --timeout --out --local --dry-run".split()


def golem_magics(shell):
    return shell.magics_manager.registry["GolemMagics"]


def test_help_lists_every_cell_option_and_subcommand(shell, capsys):
    doc = shell.find_cell_magic("golem").__doc__
    assert shell.find_line_magic("golem").__doc__ == doc
    shell.run_cell("%%golem?")
    shown = capsys.readouterr().out
    for text in (doc, shown):
        assert "%%golem [--gpu]" in text
        for option in CELL_OPTIONS:
            # Listed as an option, with its help on the same line.
            assert re.search(rf"^  {re.escape(option)}\b.*  \S", text, re.MULTILINE), option
        for name in SUBCOMMANDS:
            assert re.search(rf"^  %golem {name} +\S", text, re.MULTILINE), name
    assert "not active" not in doc  # --verify works now


def test_subcommand_help_shows_its_usage_and_runs_nothing(shell, capsys):
    magics = golem_magics(shell)
    before = (magics.market, magics.gpu_market, magics.connection)
    for flag in ("-h", "--help"):
        assert shell.run_line_magic("golem", f"connect {flag}") is None
        out = capsys.readouterr().out
        assert "%golem connect [-h]" in out
        for option in (
            "NETWORK",
            "--providers N",
            "--gpu",
            "--budget X",
            "--max-price X",
            "--sandbox TIER",
            "--allow-reported",
        ):
            assert option in out, option
        assert "golem:" not in out and "--dry-run" not in out
    assert (magics.market, magics.gpu_market, magics.connection) == before


def test_wrong_subcommand_option_shows_that_subcommands_usage(shell):
    with pytest.raises(UsageError) as raised:
        shell.run_line_magic("golem", "budget --frobnicate")
    message = str(raised.value)
    assert "--frobnicate" in message and "%golem budget [-h]" in message
    assert "%%golem" not in message and "--dry-run" not in message


def test_connect_refuses_an_unknown_sandbox_tier_naming_the_tiers(shell):
    magics = golem_magics(shell)
    before = (magics.market, magics.gpu_market, magics.connection)
    for tier in ("gvisor", "BWRAP", "''"):
        with pytest.raises(UsageError) as raised:
            shell.run_line_magic("golem", f"connect --sandbox {tier}")
        message = str(raised.value)
        assert "--sandbox" in message and "'none'" in message and "'bwrap'" in message, message
        assert "%golem connect [-h]" in message
    assert (magics.market, magics.gpu_market, magics.connection) == before


def test_connect_rents_only_offers_with_the_sandbox_demanded(shell, tmp_path, capsys):
    """``%golem connect --sandbox bwrap`` reaches the cluster's demand: on a market whose only
    offers run code unconfined or ask for an ERC-20, nothing fits, and the error says why for each
    (before any provider is contacted: these offers have no agent behind them)."""
    magics = golem_magics(shell)
    saved = (magics.connection, magics.market)
    magics.market = None  # a session of the module's market, if open, stays as it is
    try:
        with local_market(tmp_path, providers=0) as chain_only:
            unconfined, erc20 = Wallet.dev(8), Wallet.dev(9)
            dead = "127.0.0.1:9"  # never dialled
            chain_only.chain(unconfined).registry.publish(
                Offer(dead, price_per_cpu_second=1, capabilities={"sandbox": "none"})
            )
            chain_only.chain(erc20).registry.publish(
                Offer(dead, price_per_cpu_second=1, capabilities={"sandbox": "bwrap", "token": TOKEN})
            )
            network = chain_only.home / "devnet.json"
            with pytest.raises(MarketError) as raised:
                shell.run_line_magic("golem", f"connect {network} --providers 1 --sandbox bwrap --budget 1gwei")
            message = str(raised.value)
            assert "only 0 of the 2 offers" in message, message
            assert f"provider {unconfined.address} runs requestors' code with sandbox 'none'; you demanded 'bwrap'" in (
                message
            )
            assert f"provider {erc20.address} is priced in token {TOKEN}, your session pays in the native currency" in (
                message
            )
            assert magics.market is None and magics.connection.sandbox == "bwrap"

            # %golem providers shows each offer's sandbox (the connection's network is this market).
            table = shell.run_line_magic("golem", "providers")
            assert "sandbox" in repr(table).splitlines()[1]
            rows = {line.split()[0]: line.split() for line in repr(table).splitlines()[2:]}
            assert "none" in rows[unconfined.address] and "bwrap" in rows[erc20.address]
            assert "<th>sandbox</th>" in table._repr_html_()
    finally:
        magics.connection, magics.market = saved
        capsys.readouterr()


def test_connect_leaves_out_providers_this_ledger_reported_unless_allow_reported(shell, tmp_path, capsys):
    """A fault recorded in the notebook's ledger keeps its provider out of ``%golem connect``;
    ``--allow-reported`` reaches the cluster and rents it (here it fails at once: no agent is
    behind the offer, so the error names it as tried)."""
    magics = golem_magics(shell)
    saved = (magics.connection, magics.market)
    magics.market = None  # a session of the module's market, if open, stays as it is
    try:
        with local_market(tmp_path, providers=0) as chain_only:
            reported = Wallet.dev(8)
            chain_only.chain(reported).registry.publish(Offer("127.0.0.1:9", price_per_cpu_second=1))  # never answers
            ledger = chain_only.ledger()  # the one the magic's sessions use ($GOLEM_HOME)
            session = new_id()
            ledger.record_session(
                session_id=session, network=chain_only.network.name, chain_id=chain_only.network.chain_id,
                escrow=chain_only.network.escrow, requestor=Wallet.dev(0).address, token=NATIVE, budget=1,
                deadline=2**40,
            )  # fmt: skip
            ledger.record_fault(
                session_id=session, graph_id=new_id(), provider=reported.address, key="k", evidence=new_id()
            )
            network = chain_only.home / "devnet.json"
            with pytest.raises(MarketError) as raised:
                shell.run_line_magic("golem", f"connect {network} --providers 1 --budget 1gwei")
            message = str(raised.value)
            assert "only 0 of the 1 offers" in message, message
            assert "1 provider was left out because this ledger recorded a wrong result of theirs" in message
            assert magics.market is None and magics.connection.allow_reported is False

            with pytest.raises(MarketError) as raised:
                shell.run_line_magic("golem", f"connect {network} --providers 1 --budget 1gwei --allow-reported")
            message = str(raised.value)
            assert "Could rent only 0 of 1 providers" in message and reported.address in message, message
            assert magics.market is None and magics.connection.allow_reported is True

            # %golem providers: no FaultReported event on this chain, the fault in the user's ledger.
            table = shell.run_line_magic("golem", "providers")
            assert re.search(r"\breputation +faults +sandbox\b", repr(table).splitlines()[1])
            [row] = repr(table).splitlines()[2:]
            assert row.split()[0] == reported.address and re.search(r"\bnew +0 \(reported by you\) +none\b", row), row
            assert "<th>faults</th>" in table._repr_html_()
    finally:
        magics.connection, magics.market = saved
        capsys.readouterr()


def test_budget_amount_may_have_its_unit_apart(shell):
    magics = golem_magics(shell)
    saved = (magics.connection, magics.market)
    magics.market = None
    try:
        shell.run_line_magic("golem", "budget 0.02 ETH")
        assert magics.connection.budget == 2 * 10**16
    finally:
        magics.connection, magics.market = saved


def test_out_restricts_what_comes_back(shell):
    ns = fresh(shell)
    shell.run_cell_magic("golem", "--local --out b", "a = 1\nb = a + 1")
    assert ns["b"] == 2 and "a" not in ns


def test_out_naming_an_unassigned_name_is_refused(shell):
    fresh(shell)
    with pytest.raises(UsageError, match="nope"):
        shell.run_cell_magic("golem", "--local --out nope", "a = 1")


def test_dry_run_shows_the_graph_and_runs_nothing(shell, capsys):
    ns = fresh(shell)
    shell.run_cell_magic("golem", "--dry-run", "a = 1\nb = [a * i for i in range(4)]")
    out = capsys.readouterr().out
    assert "fan-out" in out and "Cost: at most" in out
    assert "a" not in ns and "b" not in ns


def test_refused_output_type_writes_nothing(shell):
    ns = fresh(shell)
    # (a Counter is made in the kernel now, tests/test_exact_cells.py test_j; a compiled pattern still cannot come back)
    with pytest.raises(GolemError, match=r"re\.Pattern"):
        shell.run_cell_magic("golem", "--local", "import re\nn = 1\nc = re.compile('a+')")
    assert "n" not in ns


def test_lazy_dask_collection_is_refused_with_advice(shell):
    fresh(shell)
    with pytest.raises(GolemError, match="compute"):
        shell.run_cell_magic("golem", "--local", "import dask.array as da\nlazy = da.ones(10, chunks=5)")


def test_ipython_syntax_is_refused(shell):
    fresh(shell)
    with pytest.raises(UsageError, match="plain Python"):
        shell.run_cell_magic("golem", "--local", "!ls\nx = 1")


# ------------------------------------------------------------------ the market


def test_market_cell_prints_a_receipt_and_settles(shell, market, capsys):
    fresh(shell)
    shell.run_cell_magic("golem", "", "import time\nparts = [sum(range(20000 * (i + 1))) for i in range(8)]")
    out = capsys.readouterr().out
    assert "receipt" in out.lower() or "graph" in out.lower()
    magics = shell.magics_manager.registry["GolemMagics"]
    cluster = magics.market.cluster
    assert cluster.wait_for_settlement(60)
    graph = cluster.graphs[-1]
    record = cluster.ledger.graph(graph["graph_id"])
    assert record.status == "confirmed" and record.tx_hash
    shell.run_line_magic("golem", "status")
    out = capsys.readouterr().out
    assert record.tx_hash in out
    # Short amounts, each with its exact wei beside it.
    assert f"  spent {format_wei_exact(cluster.spent)} of {format_wei_exact(cluster.budget)};" in out
    assert f" {format_wei_exact(graph['total'])} confirmed " in out


def test_budget_cap_stops_the_cell_and_pays_what_ran(shell, market, capsys):
    """The cell's cap stops it and writes nothing back; what ran (the naps already running when the
    guard fired included) is paid: each provider's bill for the session is what its own meter says."""
    ns = fresh(shell)
    with pytest.raises(BudgetExceeded):
        shell.run_cell_magic("golem", "--budget 1wei", "import time\nslow = [time.sleep(0.2) or i for i in range(40)]")
    assert "slow" not in ns
    assert "budget" in capsys.readouterr().out.lower()
    cluster = shell.magics_manager.registry["GolemMagics"].market.cluster
    paid = [assert_paid_as_metered(market, cluster.session_id, p, ledger=cluster.ledger) for p in cluster.rentals]
    assert sum(paid) > 0


def test_gpu_without_gpu_providers_fails_at_once(shell, market):
    fresh(shell)
    with pytest.raises(GolemError, match="No GPU provider"):
        shell.run_cell_magic("golem", "--gpu", "y = xp.ones(3)")


def test_timeout_cancels_and_writes_nothing(shell):
    ns = fresh(shell)
    with pytest.raises(TimeoutError, match="--timeout"):
        shell.run_cell_magic("golem", "--local --timeout 1", "import time\nnaps = [time.sleep(0.5) for _ in range(20)]")
    assert "naps" not in ns and "time" not in ns


def test_max_price_runs_only_on_cheap_providers(shell, market):
    fresh(shell)
    cheapest = min(market.providers, key=lambda p: p.price_per_cpu_second)
    shell.run_cell_magic(
        "golem", f"--max-price {cheapest.price_per_cpu_second}wei", "vals = [sum(range(30000)) for _ in range(12)]"
    )
    cluster = shell.magics_manager.registry["GolemMagics"].market.cluster
    assert set(cluster.graphs[-1]["payouts"]) == {cheapest.address}


def test_budget_command_tops_the_escrow_up(shell, market, capsys):
    cluster = shell.magics_manager.registry["GolemMagics"].market.cluster
    before = cluster.chain.escrow.session(cluster.session_id)
    shell.run_line_magic("golem", f"budget {cluster.deposit + 10**15}wei")
    after = cluster.chain.escrow.session(cluster.session_id)
    assert after.deposited - before.deposited == 10**15
    capsys.readouterr()
    shell.run_line_magic("golem", "budget")
    assert capsys.readouterr().out == (
        f"golem: budget {format_wei_exact(cluster.budget)}, spent {format_wei_exact(cluster.spent)}, "
        f"left {format_wei_exact(cluster.remaining)}\n"
    )


def test_providers_lists_the_offers(shell, market, capsys):
    offers = shell.run_line_magic("golem", "providers")
    assert {o.provider for o in offers} == {p.address for p in market.providers}
    shell.run_cell("%golem providers")  # the table is the value's display
    out = capsys.readouterr().out
    for provider in market.providers:
        assert provider.address in out
    assert "(rented)" in out and "per CPU-s" in out
    assert "<table>" in offers._repr_html_()


def test_a_cell_inherits_no_compiler_flags_from_the_project(shell):
    """golem_jupyter's own modules use ``from __future__ import annotations``; code compiled for
    a cell must not inherit it: annotations of a function defined in a cell stay objects, as in
    plain Python (and in the cell's computed statements too)."""
    fresh(shell)
    cell = "def f(x: int) -> float:\n    return x / 2\n\nannotations = dict(f.__annotations__)\ny = f(3)\n"
    shell.run_cell_magic("golem", "--local", cell)
    assert shell.user_ns["f"].__annotations__ == {"x": int, "return": float}
    assert shell.user_ns["annotations"] == {"x": int, "return": float}
    assert shell.user_ns["y"] == 1.5
