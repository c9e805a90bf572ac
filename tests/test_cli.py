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
