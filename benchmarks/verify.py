"""What ``--verify 0.1`` costs: wall time and money against ``--verify 0`` on the same market.

    python benchmarks/verify.py                          # 400 tasks, 7 rounds of each
    python benchmarks/verify.py --tasks 200 --rounds 4   # quicker

A devnet of 2 honest provider agents is started here (as ``golem devnet --providers 2``) and one
``GolemCluster`` rents both. Each round sends the same workload, ``client.map`` of N tasks of
10 to 20 ms of NumPy each (``tasks.spectrum_peak``: an FFT of 2^18 Gaussian samples), and times it
from submitting to having every result back in this process. With ``verify=0.1`` a tenth of the
tasks, drawn with randomness the providers cannot see, have their results held back, are run
again on the other provider and compared before the results are released (by the scheduler when
the two commitments are the same bytes, here in this process otherwise); with ``verify=0``
nothing is checked. Cost is what the session's meter priced for the round: the
``total`` (wei) of every graph the cluster recorded during it, the checks' re-runs included.

Goals (DESIGN.md section 6, issue 18): time(verify=0.1) / time(verify=0) <= 1.15 and
cost(verify=0.1) / cost(verify=0) <= 1.12. Each ratio is taken within a pair (the two sides'
rounds of the same seeds, run one after the other) and the goal is checked on the median of the
pairs' ratios: load that drifts over the run then moves both sides of a ratio alike instead of
landing in one side's median. The medians of each side are printed too.

Also printed, with no goal: the CPU time the providers' threads spent in the tasks (each task
records its own ``time.thread_time``). The meter prices wall-clock seconds, so on a machine
where the requestor's checking shares the providers' cores, a task that waited for a core costs
more without computing more; the two ratios side by side tell the re-runs' compute from that wait.

Like with like: the same cluster, workers, scheduler, TLS and metering for both sides, switched
with ``cluster.set_verify`` between rounds; the two sides alternate round by round (the order
flipping every pair), so load that comes and goes on the machine falls on both; both get the same
warm-up (which also pays the providers' start fees). Each round's graphs are settled on-chain
before the next round starts, untimed, so that no settlement lands in the other side's timing.
Seeds differ from round to round and are the same for the two sides of a pair, so both compute
the same values; every result is checked against the same function run here. Honest providers
only: a check that finds a mismatch here is a false alarm, and is reported as a failure.
Absolute numbers depend on the machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS.parent)]  # a checkout runs without installing

import tasks  # noqa: E402 (uploaded to the workers, which see nothing of this directory)
from distributed import Client  # noqa: E402
from distributed.diagnostics.plugin import UploadFile  # noqa: E402
from tasks import spectrum_peak, take_cpu_seconds  # noqa: E402

from golem_jupyter.devnet import Devnet  # noqa: E402
from golem_jupyter.ledger import Ledger  # noqa: E402
from golem_jupyter.requestor.cluster import GolemCluster  # noqa: E402

PROVIDERS = 2
BUDGET = 10**18
FRACTION = 0.1
TIME_GOAL = 1.15
COST_GOAL = 1.12


def graphs_settled(cluster: GolemCluster, timeout: float = 120) -> int:
    """Wait until every graph so far is recorded and confirmed on-chain (re-runs of checks are
    priced a moment after the results are back); return how many the cluster recorded."""
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        cluster.wait_for_settlement(max(1.0, deadline - time.monotonic()))
        time.sleep(0.5)
        if len(cluster.graphs) == count:
            return count
        count = len(cluster.graphs)
    raise TimeoutError(f"graphs were still being recorded after {timeout:.0f} s")


@dataclass
class Round:
    seconds: float
    """Wall time, from submitting to having every result here."""
    wei: int
    """What the meter priced (the providers' wall-clock seconds of computing, re-runs included)."""
    checked: int
    kernel_cpu: float
    """CPU-seconds of this process, where the checks are compared."""
    scheduler_cpu: float
    """CPU-seconds of the scheduler, where the checks are held."""
    task_cpu: float
    """CPU-seconds the providers' threads spent in the tasks (re-runs included): the compute itself,
    without the time a task waited for a core."""


def one_round(client: Client, cluster: GolemCluster, seeds: range, expected: list[float]) -> Round:
    """Run and measure one round of ``seeds``."""
    before_graphs = graphs_settled(cluster)
    before_checked = cluster.verification.stats.checked
    client.run(take_cpu_seconds)
    scheduler_cpu = client.run_on_scheduler(time.process_time)
    cpu = time.process_time()
    start = time.perf_counter()
    results = client.gather(client.map(spectrum_peak, seeds, pure=False))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    scheduler_cpu = client.run_on_scheduler(time.process_time) - scheduler_cpu
    assert results == expected, "a result differs from the same function run here"
    graphs_settled(cluster)
    cost = sum(g["total"] for g in cluster.graphs[before_graphs:])
    task_cpu = sum(sum(seconds) for seconds in client.run(take_cpu_seconds).values())
    return Round(elapsed, cost, cluster.verification.stats.checked - before_checked, cpu, scheduler_cpu, task_cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per round (default 400)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each side (default 7)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="golem-bench-verify-"))
    os.environ["GOLEM_HOME"] = str(home)  # the agents inherit it
    # The scheduler imports the task module to read the graphs, as a user's scheduler imports theirs.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")]))
    devnet = Devnet(port=0, providers=PROVIDERS, connection_file=home / "devnet.json")
    rounds: dict[float, list[Round]] = {0.0: [], FRACTION: []}
    try:
        network = devnet.start()
        print(f"Devnet: {PROVIDERS} honest providers; {args.tasks} tasks per round, {args.rounds} rounds of each side.")
        with (
            GolemCluster(
                n_providers=PROVIDERS, budget=BUDGET, network=network, ledger=Ledger(home / "ledger.sqlite")
            ) as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(UploadFile(tasks.__file__))  # as a Dask user ships a module
            for fraction in (0.0, FRACTION):  # warm-up: imports, connections, start fees
                cluster.set_verify(fraction)
                warm = range(10**6, 10**6 + PROVIDERS * 8)
                one_round(client, cluster, warm, [spectrum_peak(s) for s in warm])
            for r in range(args.rounds):
                seeds = range(r * args.tasks, (r + 1) * args.tasks)
                expected = [spectrum_peak(s) for s in seeds]
                for fraction in (0.0, FRACTION) if r % 2 == 0 else (FRACTION, 0.0):
                    cluster.set_verify(fraction)
                    rounds[fraction].append(one_round(client, cluster, seeds, expected))
            stats = cluster.verification.stats
            faults = list(cluster.faults)
    finally:
        devnet.stop()

    plain, verified = rounds[0.0], rounds[FRACTION]

    def ratio(measure: str) -> float:
        pairs = zip(verified, plain, strict=True)
        return statistics.median(getattr(v, measure) / getattr(p, measure) for v, p in pairs)

    def median(side: list[Round], measure: str) -> float:
        return statistics.median(getattr(r, measure) for r in side)

    time_ratio, cost_ratio, cpu_ratio = ratio("seconds"), ratio("wei"), ratio("task_cpu")
    rows = [
        ("wall time per round (s)", f"{median(plain, 'seconds'):.2f}", f"{median(verified, 'seconds'):.2f}",
         f"ratio {time_ratio:.3f} (goal ≤ {TIME_GOAL})", "met" if time_ratio <= TIME_GOAL else "MISSED"),
        ("cost per round (wei)", f"{median(plain, 'wei'):,.0f}", f"{median(verified, 'wei'):,.0f}",
         f"ratio {cost_ratio:.3f} (goal ≤ {COST_GOAL})", "met" if cost_ratio <= COST_GOAL else "MISSED"),
        ("task CPU per round (s)", f"{median(plain, 'task_cpu'):.2f}", f"{median(verified, 'task_cpu'):.2f}",
         f"ratio {cpu_ratio:.3f}", "(no goal)"),
    ]  # fmt: skip
    header = f"{'median of rounds':<26}{'verify=0':>14}{f'verify={FRACTION:g}':>16}"
    print(f"\n{header}   {'median of the pairs’ ratios':<34}result")
    for name, a, b, goal, result in rows:
        print(f"{name:<26}{a:>14}{b:>16}   {goal:<34}{result}")
    print(
        "\nCost is what the providers' meters price: the wall-clock seconds of their tasks. Task CPU is the\n"
        "CPU time of the same tasks' threads: where the cost ratio exceeds it, tasks waited longer for a\n"
        "core (on this machine the requestor's checking runs on the providers' cores), not computed more."
    )
    print("\nAll rounds:")
    for fraction, side in rounds.items():
        print(
            f"  verify={fraction:g}: seconds {[round(r.seconds, 2) for r in side]}, wei {[r.wei for r in side]}, "
            f"tasks checked {[r.checked for r in side]}, task CPU-s {[round(r.task_cpu, 2) for r in side]}, "
            f"CPU-s in this process {[round(r.kernel_cpu, 2) for r in side]}, "
            f"in the scheduler {[round(r.scheduler_cpu, 2) for r in side]}"
        )
    print(
        f"  checks in all: {stats.checked} tasks, {stats.mismatches} mismatches, {stats.referees} refereed, "
        f"{stats.local_runs} run here."
    )
    if faults or stats.mismatches:
        print(f"FAILED: honest providers were flagged: {faults or stats.mismatches}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
