"""The ``golem`` command line: option parsing that reaches no market."""

from __future__ import annotations

import pytest

from golem_jupyter.cli import _parser


def provider_run(*options: str):
    return _parser().parse_args(["provider", "run", *options])


def test_provider_prices_take_units_and_bare_wei():
    args = provider_run("--price-cpu", "2gwei", "--price-gpu", "0.00001eth", "--start-fee", "7", "--max-unpaid", "1eth")
    assert (args.price_cpu, args.price_gpu, args.start_fee, args.max_unpaid) == (2 * 10**9, 10**13, 7, 10**18)


def test_provider_prices_default_to_one_and_ten_gwei():
    args = provider_run()
    assert (args.price_cpu, args.price_gpu, args.start_fee) == (10**9, 10**10, 0)


@pytest.mark.parametrize("bad", ["1gwee", "0.5", "-", "1e-30eth"])
def test_a_bad_price_is_a_usage_error_naming_the_text(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        provider_run("--price-cpu", bad)
    assert stopped.value.code == 2
    assert repr(bad) in capsys.readouterr().err


def test_golem_ledger_faults_lists_each_provider_outvoted(tmp_path, monkeypatch, capsys):
    from golem_jupyter.ledger import Ledger

    monkeypatch.setenv("GOLEM_HOME", str(tmp_path))
    args = _parser().parse_args(["ledger", "faults"])
    assert args.run(args) == 0
    assert "no faults" in capsys.readouterr().out

    session, graph, tx = "0x" + "22" * 32, "0x" + "33" * 32, "0x" + "44" * 32
    liar = "0xAaAaaAAAaAaaAaAaAaaAAaAaAAAAAaAAAaaAaAa2"
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record_session(
            session_id=session, network="devnet", chain_id=1, escrow="0x" + "cc" * 20, requestor="0x" + "dd" * 20,
            token="0x" + "00" * 20, budget=10**18, deadline=2**40,
        )  # fmt: skip
        ledger.record_fault(
            session_id=session, graph_id=graph, provider=liar, key="('square-abc', 3)", evidence="0x" + "55" * 32,
            tx_hash=tx,
        )  # fmt: skip
        ledger.record_fault(session_id=session, graph_id=None, provider=liar, key="k", evidence="0x" + "66" * 32)
    args = _parser().parse_args(["ledger", "faults"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Ledger ")
    assert liar in lines[1] and f"session {session[:12]}…" in lines[1] and f"graph {graph[:12]}…" in lines[1]
    assert f"reported in tx {tx}" in lines[1] and lines[2].split() == ["task", "('square-abc',", "3)"]
    assert "no graph" in lines[3] and "not reported on-chain" in lines[3]
    assert "1 provider(s) above are not rented again" in out and "--allow-reported" in out

    args = _parser().parse_args(["ledger", "faults", "--limit", "1"])
    assert args.run(args) == 0
    assert capsys.readouterr().out.count(liar) == 1
