"""The market's overhead, against plain Dask measured in the same run.

    python benchmarks/market.py                 # 10,000 tasks, 3 rounds
    python benchmarks/market.py --tasks 2000    # quicker

1. Start-up: seconds from ``GolemCluster(n_providers=4)`` until its 4 workers have joined, on a
   devnet whose 4 provider agents are already running (goal <= 5 s). ``LocalCluster`` with 4
   worker processes is timed beside it for reference.
2. Throughput: N trivial tasks (``client.map``) through GolemCluster (TLS with mutual auth,
   metering, vouchers, on-chain settlement off the critical path) against a plain
   ``LocalCluster`` with the same number of worker processes and threads (goal >= 0.9).
   The best of several rounds is kept for each, alternating the two.

The LocalCluster is measured in a child process of the same run: its scheduler runs inside the
process that owns it, which cannot share a process with a GolemCluster (that process decodes
provider bytes only through the restricted decoder, which refuses the graphs a scheduler must
unpickle). Absolute numbers depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))
from tasks import increment  # the workers import it from here too

from golem_jupyter.devnet import Devnet
from golem_jupyter.ledger import Ledger
from golem_jupyter.requestor.cluster import GolemCluster

WORKERS = 4
BUDGET = 10**18
STARTUP_GOAL = 5.0
THROUGHPUT_GOAL = 0.9


def throughput(client: Client, n: int) -> float:
    start = time.perf_counter()
    results = client.gather(client.map(increment, range(n), pure=False))
    elapsed = time.perf_counter() - start
    assert results[-1] == n
    return n / elapsed


def measure_local(tasks: int, rounds: int) -> dict[str, object]:
    start = time.perf_counter()
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        startup = time.perf_counter() - start
        with Client(local) as client:
            throughput(client, 200)
            rates = [throughput(client, tasks) for _ in range(rounds)]
    return {"startup": startup, "rates": rates}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.local_only:
        print(json.dumps(measure_local(args.tasks, args.rounds)))
        return 0

    peer = subprocess.run(
        [sys.executable, __file__, "--local-only", "--tasks", str(args.tasks), "--rounds", str(args.rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    local = json.loads(peer.stdout.strip().splitlines()[-1])
    local_startup, local_rates = local["startup"], local["rates"]

    home = Path(tempfile.mkdtemp(prefix="golem-bench-"))
    os.environ["GOLEM_HOME"] = str(home)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    with Devnet(port=0, providers=WORKERS, connection_file=home / "devnet.json") as network:
        start = time.perf_counter()
        cluster = GolemCluster(n_providers=WORKERS, budget=BUDGET, network=network, ledger=Ledger(), quiet=True)
        golem_startup = time.perf_counter() - start
        with Client(cluster) as client:
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            assert threads == WORKERS, "one single-threaded worker per provider, as in the LocalCluster"
            throughput(client, 200)  # warm: imports, connections
            golem_rates = [throughput(client, args.tasks) for _ in range(args.rounds)]
            cluster.wait_for_settlement(120)
            graphs = len(cluster.graphs)
        cluster.close()

    ratio = max(golem_rates) / max(local_rates)
    rows = [
        ("start-up, 4 workers (s)", f"{golem_startup:.2f}", f"{local_startup:.2f}", f"goal <= {STARTUP_GOAL:.0f} s",
         "met" if golem_startup <= STARTUP_GOAL else "MISSED"),
        (f"{args.tasks:,} tasks (tasks/s)", f"{max(golem_rates):.0f}", f"{max(local_rates):.0f}",
         f"ratio {ratio:.2f}, goal >= {THROUGHPUT_GOAL}", "met" if ratio >= THROUGHPUT_GOAL else "MISSED"),
    ]  # fmt: skip
    print(f"\n{'measure':<28}{'GolemCluster':>14}{'LocalCluster':>14}   {'goal':<28}result")
    for name, golem, plain, goal, result in rows:
        print(f"{name:<28}{golem:>14}{plain:>14}   {goal:<28}{result}")
    print(f"\nAll rounds, tasks/s: GolemCluster {[round(r) for r in golem_rates]}, "
          f"LocalCluster {[round(r) for r in local_rates]}; {graphs} graphs settled on-chain.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
