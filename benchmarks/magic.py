"""What a ``%%golem`` cell costs over the plain tools it competes with, measured in the same run.

    python benchmarks/magic.py                                  # 2 providers, 50 cells, 5 fan-outs
    python benchmarks/magic.py --rounds 20 --rounds-fanout 3    # quicker

A real IPython ``InteractiveShell`` loads the extension and connects (``%golem connect``) to a
devnet market started here, as ``tests/test_magic.py`` does; ``GOLEM_DISPLAY=text`` keeps widgets
out. Then:

1. Trivial cell on a warm session, like for like: the same code string (``x = 1 + 1``) as a
   ``%%golem`` cell, which runs it as one task on one rented provider and brings ``x`` back into
   the notebook, against ``rc[0].execute(code, block=True)`` then ``rc[0].pull("x", block=True)``
   on one ipyparallel engine (controller and engines on 127.0.0.1), which does the same: run the
   code remotely, bring ``x`` back. Median and p90 wall time per cell (goal: golem/ipyparallel <=
   1.5). The ``%%golem`` side also plans the cell, decodes ``x`` through the restricted decoder
   and prints its receipt (captured here, not shown). Both get the same warm-up.
2. Fan-out: the cell ``ys = [work(i) for i in range(E)]``, ``work`` a small CPU function defined in
   the notebook (the magic ships it to the providers), against
   ``client.gather(client.map(work, range(E), pure=False))`` on the same session's Dask client,
   so the same workers, scheduler, TLS and metering: the difference is the magic alone. Median
   time and throughput over the rounds after a warm-up (goal: golem/map throughput >= 0.9).

Fairness: the two sides of each measure alternate round by round, so load that comes and goes on
the machine (the devnet's chain runs in this process; the providers and engines share its
cores) falls on both. Each graph run on the market is settled on-chain in the background; the
benchmark waits for that settlement between rounds, untimed, as a user's pause between cells
would, so that one side's settlement never lands in the other side's timing; how long it took
is printed. Floors on the same client (a one-task ``client.get`` over the session's TLS, the least
any cell on the market can take, and the scheduler round trips a cell may add: ``scheduler_info``
for the thread count, ``run_on_scheduler`` for progress) show how much of the cell time is Dask
and the network rather than the magic. Correctness is checked
once per measure. Absolute numbers depend on the machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import operator
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path[:0] = [str(BENCHMARKS), str(REPO)]  # a checkout runs without installing; workers get the same path

TRIVIAL_CODE = "x = 1 + 1"
WORK_SOURCE = "def work(i):\n    return sum(k * k for k in range(100 + i % 100))\n"
FANOUT_CELL = "ys = [work(i) for i in range({elements})]"
BUDGET = "0.05"  # ETH for the whole run, which spends a tiny fraction of it
WARMUP_CELLS = 5
SETTLE_TIMEOUT = 60.0
TRIVIAL_GOAL = 1.5
FANOUT_GOAL = 0.9


@dataclass(frozen=True)
class Timings:
    """Wall times of one measure, in seconds."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def p90(self) -> float:
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank


# ---------------------------------------------------------------------------- set-up


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=2, metavar="N", help="providers rented, ipyparallel engines")
    parser.add_argument("--rounds", type=int, default=50, metavar="R", help="trivial cells timed on each side")
    parser.add_argument("--rounds-fanout", type=int, default=5, metavar="R", help="fan-outs timed on each side")
    parser.add_argument("--elements", type=int, default=1000, metavar="E", help="elements of the fan-out")
    args = parser.parse_args()
    if min(args.providers, args.rounds, args.rounds_fanout, args.elements) < 1:
        parser.error("--providers, --rounds, --rounds-fanout and --elements need at least 1")
    return args


def prepare_environment(home: Path) -> None:
    """State under ``home``; children (provider agents, workers, engines) inherit the paths."""
    os.environ["GOLEM_HOME"] = str(home)  # chain, ledger and provider state of this run only
    os.environ["IPYTHONDIR"] = str(home / "ipython")  # the shell's history, ipyparallel's profile
    os.environ["GOLEM_DISPLAY"] = "text"  # no widgets
    paths = [str(BENCHMARKS), str(REPO), os.environ.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))


@contextlib.contextmanager
def golem_shell(connection_file: Path, providers: int) -> Iterator[Any]:
    """A real IPython shell with the extension loaded and a market session of ``providers``."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # nothing written under the temporary home after it is gone
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "golem_jupyter")
    try:
        with quiet():
            ip.run_line_magic("golem", f"connect {connection_file} --providers {providers} --budget {BUDGET}")
        yield ip
    finally:
        with quiet():
            ip.run_line_magic("golem", "close")


@contextlib.contextmanager
def ipyparallel_engines(n: int) -> Iterator[Any]:
    """``n`` ipyparallel engines and their controller, all on 127.0.0.1; a connected Client."""
    import ipyparallel

    cluster = ipyparallel.Cluster(n=n, controller_ip="127.0.0.1", log_level=30)
    try:
        cluster.start_cluster_sync()
        rc = cluster.connect_client_sync()
        rc.wait_for_engines(n, timeout=120, interactive=False)
        try:
            yield rc
        finally:
            rc.close()
    finally:
        cluster.stop_cluster_sync()


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Capture what the magic prints (receipts, connection lines)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def market(ip: Any) -> Any:
    return ip.magics_manager.registry["GolemMagics"].market


def settle(ip: Any) -> float:
    """Wait (untimed in the results) until every graph so far is settled on-chain; seconds waited."""
    start = time.perf_counter()
    if not market(ip).cluster.wait_for_settlement(SETTLE_TIMEOUT):
        print(f"warning: settlement still pending after {SETTLE_TIMEOUT:.0f} s", file=sys.stderr)
    return time.perf_counter() - start


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- the two sides


def golem_cell(ip: Any, code: str) -> Callable[[], None]:
    def run() -> None:
        with quiet():
            ip.run_cell_magic("golem", "", code)

    return run


def ipyparallel_execute(rc: Any, code: str, name: str) -> Callable[[], Any]:
    """Run ``code`` on one engine and bring ``name`` back: what the ``%%golem`` side does."""
    engine = rc[0]

    def run() -> Any:
        engine.execute(code, block=True)
        return engine.pull(name, block=True)

    return run


def client_map(client: Any, work: Callable[[int], int], elements: int) -> Callable[[], list[int]]:
    def run() -> list[int]:
        return client.gather(client.map(work, range(elements), pure=False))

    return run


def alternate(
    first: Callable[[], Any], second: Callable[[], Any], rounds: int, between: Callable[[], float]
) -> tuple[Timings, Timings, Timings]:
    """Time ``first`` and ``second`` in turn, ``rounds`` times each, starting with each in turn.

    ``between`` runs untimed after each action; what it takes after ``first`` is returned third.
    """
    a: list[float] = []
    b: list[float] = []
    waits: list[float] = []
    for i in range(rounds):
        order = ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a))
        for action, times in order:
            times.append(timed(action))
            wait = between()
            if times is a:
                waits.append(wait)
    return Timings(a), Timings(b), Timings(waits)


# ---------------------------------------------------------------------------- the measures


def trivial(ip: Any, rc: Any, rounds: int) -> dict[str, Any]:
    """Measure 1: the same small code as a ``%%golem`` cell and on one ipyparallel engine, each
    bringing ``x`` back."""
    cell, execute = golem_cell(ip, TRIVIAL_CODE), ipyparallel_execute(rc, TRIVIAL_CODE, "x")
    for _ in range(WARMUP_CELLS):
        cell()
        execute()
    settle(ip)
    golem, ipp, waits = alternate(cell, execute, rounds, lambda: settle(ip))
    expected: dict[str, Any] = {}
    exec(TRIVIAL_CODE, expected)
    ip.user_ns.pop("x", None)
    cell()
    correct = ip.user_ns.get("x") == expected["x"] == execute()
    return {"golem": golem, "ipyparallel": ipp, "correct": correct, "settle": waits}


def fanout(ip: Any, rounds: int, elements: int) -> dict[str, Any]:
    """Measure 2: an E-element comprehension cell against ``client.map`` on the same client."""
    ip.run_cell(WORK_SOURCE).raise_error()
    work = ip.user_ns["work"]
    cell = golem_cell(ip, FANOUT_CELL.format(elements=elements))
    mapped = client_map(market(ip).client, work, elements)
    expected = [work(i) for i in range(elements)]
    ip.user_ns.pop("ys", None)
    cell()  # warm-up, and the correctness check
    correct = ip.user_ns.get("ys") == expected and mapped() == expected
    settle(ip)
    golem, plain, waits = alternate(cell, mapped, rounds, lambda: settle(ip))
    return {"golem": golem, "map": plain, "correct": correct, "settle": waits}


def floors(ip: Any, rounds: int) -> dict[str, Timings]:
    """What the same client takes for a one-task graph, and for the scheduler round trips a cell may add."""
    client = market(ip).client

    def one_task() -> None:
        key = f"floor-{uuid.uuid4().hex}"
        assert client.get({key: (operator.add, 1, 1)}, key) == 2

    def info() -> None:
        client.scheduler_info()

    def on_scheduler() -> None:
        client.run_on_scheduler(_nothing)

    for _ in range(WARMUP_CELLS):
        one_task()
        on_scheduler()
    settle(ip)
    gets = []
    for _ in range(rounds):
        gets.append(timed(one_task))
        settle(ip)  # each graph is paid for on-chain, as a cell's is
    return {
        "1-task client.get": Timings(gets),
        "client.scheduler_info()": Timings([timed(info) for _ in range(rounds)]),
        "client.run_on_scheduler()": Timings([timed(on_scheduler) for _ in range(rounds)]),
    }


def _nothing() -> None:
    """Run on the scheduler: the round trip alone."""


# ---------------------------------------------------------------------------- output


def header(ip: Any, rc: Any, args: argparse.Namespace) -> None:
    client = market(ip).client
    workers = client.scheduler_info()["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    print(f"%%golem benchmark on {os.cpu_count()} CPU cores, shared by everything below (load {_load()})")
    print(f"  golem:       devnet chain in this process; {args.providers} provider agents, {len(workers)} Dask workers "
          f"({threads} threads), scheduler {client.scheduler.address}")  # fmt: skip
    print(f"  ipyparallel: controller and {len(rc.ids)} engines on 127.0.0.1")
    print(f"  trivial cell {TRIVIAL_CODE!r}: {args.rounds} rounds after {WARMUP_CELLS} warm-ups; "
          f"fan-out of {args.elements:,}: {args.rounds_fanout} rounds after 1 warm-up", flush=True)  # fmt: skip


def _load() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def verdict(ratio: float, goal: float, at_most: bool) -> str:
    return "PASS" if (ratio <= goal if at_most else ratio >= goal) else "MISS"


def report(t: dict[str, Any], f: dict[str, Any], floor: dict[str, Timings], elements: int) -> None:
    g, p = t["golem"], t["ipyparallel"]
    gf, mf = f["golem"], f["map"]
    rate_g, rate_m = elements / gf.median, elements / mf.median
    rows = [
        ("trivial cell, median (ms)", g.median * 1e3, p.median * 1e3, g.median / p.median),
        ("trivial cell, p90 (ms)", g.p90 * 1e3, p.p90 * 1e3, g.p90 / p.p90),
        (f"fan-out of {elements:,}, median (s)", gf.median, mf.median, gf.median / mf.median),
        ("fan-out (elements/s)", rate_g, rate_m, rate_g / rate_m),
    ]
    print(f"\n{'measure':<32}{'%%golem':>12}{'baseline':>12}{'ratio':>8}   baseline")
    for i, (name, golem, base, ratio) in enumerate(rows):
        other = "ipyparallel rc[0] execute + pull" if i < 2 else "client.map, same workers"
        print(f"{name:<32}{golem:>12.3g}{base:>12.3g}{ratio:>8.2f}   {other}")
    print("\nfloors on the same Dask client (median ms):")
    for name, timings in floor.items():
        print(f"  {name:<30}{timings.median * 1e3:>8.1f}   (p90 {timings.p90 * 1e3:.1f})")
    print(f"settlement waited for after each %%golem cell (untimed): median {t['settle'].median * 1e3:.0f} ms "
          f"after a trivial cell, {f['settle'].median * 1e3:.0f} ms after a fan-out cell")  # fmt: skip
    print(f"correct: trivial cell {'yes' if t['correct'] else 'NO'}, fan-out {'yes' if f['correct'] else 'NO'}\n")
    ratio = g.median / p.median
    print(f"trivial cell: golem {g.median * 1e3:.1f} ms vs ipyparallel {p.median * 1e3:.1f} ms: "
          f"ratio {ratio:.2f} (goal <= {TRIVIAL_GOAL}): {verdict(ratio, TRIVIAL_GOAL, True)}")  # fmt: skip
    ratio = rate_g / rate_m
    print(f"fan-out of {elements:,}: golem {rate_g:.0f}/s vs client.map {rate_m:.0f}/s: "
          f"ratio {ratio:.2f} (goal >= {FANOUT_GOAL}): {verdict(ratio, FANOUT_GOAL, False)}")  # fmt: skip


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace, home: Path) -> None:
    from golem_jupyter.devnet import Devnet

    with (
        Devnet(port=0, providers=args.providers, connection_file=home / "devnet.json"),
        golem_shell(home / "devnet.json", args.providers) as ip,
        ipyparallel_engines(args.providers) as rc,
    ):
        header(ip, rc, args)
        t = trivial(ip, rc, args.rounds)
        f = fanout(ip, args.rounds_fanout, args.elements)
        floor = floors(ip, args.rounds)
        report(t, f, floor, args.elements)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminated)  # a kill stops the devnet, providers and engines too
    home = Path(tempfile.mkdtemp(prefix="golem-bench-magic-"))
    prepare_environment(home)
    try:
        run(args, home)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
