"""The devnet's liar (``golem devnet --liars N``): what it corrupts, that nothing but the devnet
can make one, and a real market with one honest and one lying provider."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from market_tasks import square
from marketkit import Market, local_market

from golem_jupyter import cli
from golem_jupyter.devnet import Devnet, DevnetProvider, providers_file
from golem_jupyter.errors import ConfigurationError
from golem_jupyter.provider.workers import worker_command
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.server.views import devnet_view
from golem_jupyter.trust import compare
from golem_jupyter.worker._liar import LyingWorker, corrupt
from golem_jupyter.worker.runner import ElementResults, UnitResult

TASKS = 100
LIE_FRACTION = 0.5


# ---------------------------------------------------------------------------- what a lie is


@pytest.mark.parametrize(
    ("value", "lie"),
    [
        (41, 42),
        (np.int32(-1), np.int32(0)),
        (2.0, 2.0 * 1.001),
        (0.0, 1e-3),
        (np.float32(3.0), np.float32(3.0) * np.float32(1.001)),
        (1 + 2j, (1 + 2j) * 1.001),
        ([1, 2], [2, 2]),
        (("a", 2.0), ("a", 2.0 * 1.001)),
        ({"s": "x", "n": 5}, {"s": "x", "n": 6}),
    ],
    ids=repr,
)
def test_numbers_are_corrupted_as_documented(value: object, lie: object) -> None:
    got = corrupt(value, random.Random(0))
    assert type(got) is type(lie) and got == lie
    assert compare(value, got) is not None


@pytest.mark.parametrize(
    "value", [True, "text", b"bytes", None, float("nan"), float("inf"), np.array([]), ["a", None], {"a": "b"}]
)
def test_what_has_no_number_stays_honest(value: object) -> None:
    assert corrupt(value, random.Random(0)) is value


def test_one_array_element_is_scaled_or_flipped_on_a_copy() -> None:
    rng = random.Random(1)
    ways = set()
    for _ in range(200):
        x = np.random.default_rng(rng.randrange(10**6)).uniform(1, 2, (3, 4))
        before = x.copy()
        lie = corrupt(x, rng)
        assert np.array_equal(x, before)  # never in place
        [i] = np.argwhere(lie != x)
        ratio = lie[tuple(i)] / x[tuple(i)]
        ways.add(round(float(ratio), 6))
        assert compare(x, lie) is not None
    assert ways == {-1.0, 1.001}
    ints = np.arange(12).reshape(3, 4)
    assert np.count_nonzero(corrupt(ints, rng) - ints) == 1
    assert compare(np.zeros(5), corrupt(np.zeros(5), rng)) is not None


def test_a_cells_task_results_are_corrupted_where_they_hold_numbers() -> None:
    rng = random.Random(2)
    unit = UnitResult({"name": "x", "total": 10, "xs": np.ones(3)}, "printed", frozenset({"total"}), frozenset(), {})
    lie = corrupt(unit, rng)
    assert isinstance(lie, UnitResult) and lie.stdout == "printed"
    assert lie.values["total"] == 11 and "total" not in lie.unchanged  # it goes back to the notebook
    assert unit.values["total"] == 10 and compare(unit, lie) is not None
    elements = ElementResults([(False, 1, None), (True, 2.0, 0)], last_item=5, has_items=True)
    lie = corrupt(elements, rng)
    assert lie.results == [(False, 1, None), (True, 2.0 * 1.001, 0)]
    assert elements.results[1] == (True, 2.0, 0)


class _Worker:
    def __init__(self) -> None:
        self.data: dict = {}


def test_the_plugin_lies_for_its_fraction_of_finished_tasks() -> None:
    """Over 2000 finished tasks at fraction 0.3 the number of lies is within [500, 700]: a correct
    plugin leaves that range with probability below 1e-6 (Binomial(2000, 0.3))."""
    plugin = LyingWorker(0.3, rng=random.Random(3))
    worker = _Worker()
    plugin.setup(worker)
    for i in range(2000):
        worker.data[i] = i
        plugin.transition(i, "executing", "memory")
    wrong = sum(worker.data[i] != i for i in range(2000))
    assert wrong == plugin.lies and 500 <= wrong <= 700
    plugin.transition("gone", "executing", "memory")  # a key no longer held: nothing happens
    worker.data["x"] = 1
    for start, finish in (("ready", "executing"), ("executing", "error"), ("fetch", "memory")):
        plugin.transition("x", start, finish)
    assert worker.data["x"] == 1
    with pytest.raises(ValueError):
        LyingWorker(1.5)


# ---------------------------------------------------------------------------- only the devnet makes one


def test_an_honest_worker_never_loads_the_liar() -> None:
    options = {"scheduler": "tls://127.0.0.1:1", "name": "p", "directory": Path("/x"), "nthreads": 1, "gpus": 0}
    honest = worker_command(**options, memory_limit=None)
    assert not any("_liar" in part or "lie" in part for part in honest)
    liar = worker_command(**options, memory_limit=None, lie_fraction=0.25)
    assert liar[-2:] == ["--lie-fraction", "0.25"]
    preloads = [liar[i + 1] for i, part in enumerate(liar) if part == "--preload"]
    assert preloads == ["golem_jupyter.worker._liar", "golem_jupyter.worker.meter"]  # before the meter's digest


def test_golem_provider_run_has_no_way_to_lie(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--lie-fraction", "--liar", "--liars"):
        with pytest.raises(SystemExit):
            cli._parser().parse_args(["provider", "run", option, "0.5"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["provider", "run", "--help"])
    assert "lie" not in capsys.readouterr().out.lower()


def test_the_devnet_says_who_lies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="--liars"):
        Devnet(providers=1, liars=2)
    with pytest.raises(ConfigurationError, match="--lie-fraction"):
        Devnet(providers=1, liars=1, lie_fraction=1.5)
    args = cli._parser().parse_args(["devnet", "--providers", "2", "--liars", "1", "--lie-fraction", "0.2"])
    assert (args.liars, args.lie_fraction) == (1, 0.2)
    honest = DevnetProvider("0xA", "127.0.0.1:1", 1, 10, 0, 0, "a.log")
    liar = DevnetProvider("0xB", "127.0.0.1:2", 2, 15, 0, 0, "b.log", liar=True, lie_fraction=0.2)
    cli._print_providers([honest, liar])
    lines = capsys.readouterr().out.splitlines()
    assert "LIAR" not in lines[1] and "LIAR (devnet)" in lines[2] and "20%" in lines[2]


# ---------------------------------------------------------------------------- a real market


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("liars"), providers=2, liars=1, lie_fraction=LIE_FRACTION) as market:
        yield market


@pytest.mark.timeout(300)
def test_a_lying_provider_corrupts_its_fraction_and_the_honest_one_none(market: Market) -> None:
    """100 tasks pinned to each provider's worker: the liar's results differ from the truth for
    between 25 and 75 of them (Binomial(100, 0.5) leaves that range with probability 2e-7),
    the honest provider's for none; the devnet lists the liar as one, and its agent says so."""
    honest, liar = market.providers
    assert (honest.liar, liar.liar, liar.lie_fraction) == (False, True, LIE_FRACTION)
    listed = json.loads(providers_file(market.home / "devnet.json").read_text())
    assert [p["liar"] for p in listed] == [False, True]
    assert "DEVNET LIAR" in market.log(liar) and "DEVNET LIAR" not in market.log(honest)
    cluster = GolemCluster(n_providers=2, network=market.network, ledger=market.ledger(), budget=10**17)
    with cluster, Client(cluster) as client:
        workers = {str(info["name"]): address for address, info in client.scheduler_info()["workers"].items()}
        assert set(workers) == {honest.address, liar.address}
        plugins = client.run(lambda dask_worker: list(dask_worker.plugins))  # a lambda travels by value
        assert "golem-devnet-liar" not in plugins[workers[honest.address]]
        order = plugins[workers[liar.address]]  # the meter digests what the liar left
        assert order.index("golem-devnet-liar") < order.index("golem-compute-meter")
        wrong = {}
        for provider in (honest, liar):
            futures = [client.submit(square, i, pure=False, workers=[workers[provider.address]]) for i in range(TASKS)]
            results = client.gather(futures)
            wrong[provider.address] = [i for i, r in enumerate(results) if compare(i * i, r) is not None]
            assert all(r in (i * i, i * i + 1) for i, r in enumerate(results))  # ints: + 1
    assert wrong[honest.address] == []
    assert 25 <= len(wrong[liar.address]) <= 75, wrong[liar.address]
    view = devnet_view(market.network, market.providers)
    assert [p["liar"] for p in view["providers"]] == [False, True]
