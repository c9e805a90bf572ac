"""The market's overhead, against plain Dask, and the provider sandbox's, all measured in the same run.

    python benchmarks/market.py                 # 10,000 tasks, 3 rounds
    python benchmarks/market.py --tasks 2000    # quicker

1. Start-up: seconds from ``GolemCluster(n_providers=4)`` until its 4 workers have joined, on a
   devnet whose 4 provider agents are already running (goal <= 5 s). ``LocalCluster`` with 4
   worker processes is timed beside it for reference.
2. Throughput: N trivial tasks (``client.map``) through GolemCluster (TLS with mutual auth,
   metering, vouchers, on-chain settlement off the critical path) against a plain
   ``LocalCluster`` with the same number of worker processes and threads (goal >= 0.9).
   The best of several rounds is kept for each, alternating the two.
3. The sandbox: the same two measures on two devnets side by side, one whose agents run their
   workers in the provider sandbox (bubblewrap, a cgroup, a network namespace whose only way out
   is the agent's relay; the default) and one whose agents run them unconfined (``"none"``):
   worker start-up (from the agent starting a worker's process, bubblewrap's or the worker's own,
   to the worker's log saying it registered: goal at most 0.5 s more with the sandbox; the median
   of all workers; the whole cluster's start-up is shown beside it) and throughput (goal: sandboxed /
   unsandboxed >= 0.95). Beside them, what does not depend on the machine's load: the CPU-seconds
   the workers (and the sandboxes' relays) use per 1,000 tasks.

Like with like: the two devnets are identical but for the sandbox (4 agents each, same prices
and options, same chain code), both stay up for the whole run, and their clusters are measured
in alternation, start-up round by round and throughput round by round, with the same warm-up,
the same task function and the same 4 single-threaded workers, so load that comes and goes on the
machine falls on both. The task function reaches the workers the same way on every side: as a
module they import (``client.register_plugin(UploadFile(...))`` for GolemCluster, whose workers
see nothing of this directory, and the path for LocalCluster). The best round of each is compared.

The LocalCluster is measured in a child process of the same run: its scheduler runs inside the
process that owns it, which cannot share a process with a GolemCluster (that process decodes
provider bytes only through the restricted decoder, which refuses the graphs a scheduler must
unpickle). Absolute numbers depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import UploadFile

sys.path.insert(0, str(Path(__file__).parent))
import tasks  # LocalCluster's workers import it from here; GolemCluster's get it uploaded
from tasks import increment

from golem_jupyter.chain import Network
from golem_jupyter.devnet import Devnet
from golem_jupyter.ledger import Ledger
from golem_jupyter.provider.sandbox import SANDBOX_ENV, sandbox_available, sandbox_unavailable_reason
from golem_jupyter.requestor.cluster import GolemCluster

WORKERS = 4
BUDGET = 10**18
STARTUP_GOAL = 5.0
THROUGHPUT_GOAL = 0.9
SANDBOX_STARTUP_GOAL = 0.5
"""Seconds a sandboxed worker may take to start beyond an unsandboxed one."""
SANDBOX_THROUGHPUT_GOAL = 0.95


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


def start_devnet(home: Path, sandbox: str) -> tuple[Devnet, Network]:
    """A devnet of WORKERS agents under ``home`` whose workers run in ``sandbox``."""
    os.environ["GOLEM_HOME"] = str(home)  # the agents inherit both
    os.environ[SANDBOX_ENV] = sandbox
    devnet = Devnet(port=0, providers=WORKERS, connection_file=home / "devnet.json")
    return devnet, devnet.start()


class _CPU(dict):
    def __sub__(self, other: dict) -> dict:
        return {part: self[part] - other.get(part, 0.0) for part in self}


def provider_cpu(devnet: Devnet) -> _CPU:
    """CPU-seconds (user + system) used so far by the devnet's workers and by their sandboxes' relays."""
    used = _CPU(workers=0.0, relays=0.0)
    for agent in devnet.provider_agents:
        for process in psutil.Process(agent.pid).children(recursive=True):
            try:
                command = " ".join(process.cmdline())
                times = process.cpu_times()
            except psutil.Error:
                continue
            if "golem_jupyter.provider._relay" in command:
                used["relays"] += times.user + times.system
            elif "distributed.cli.dask_worker" in command and process.name() != "bwrap":
                used["workers"] += times.user + times.system
    return used


def worker_startups(devnet: Devnet, home: Path, cluster: GolemCluster) -> list[float]:
    """Seconds from the agent starting each worker of ``cluster`` (the bubblewrap process, or the
    worker's own) to the worker logging that it registered with the scheduler."""
    ca = cluster.security.tls_ca_file
    ca = ca if ca.lstrip().startswith("-----BEGIN") else Path(ca).read_text()
    seconds = []
    for agent in devnet.provider_agents:
        spawned = [
            p
            for p in psutil.Process(agent.pid).children()
            if p.name() == "bwrap" or "distributed.cli.dask_worker" in p.cmdline()
        ]
        agreements = (home / "provider" / agent.address / "agreements").glob("*/ca.pem")
        ours = [path.parent for path in agreements if path.read_text() == ca]
        if not spawned or len(ours) != 1:
            continue
        log = (ours[0] / "worker.log").read_text()
        stamp = next(line[:23] for line in log.splitlines() if "Registered to:" in line)
        registered = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        seconds.append(registered - max(p.create_time() for p in spawned))
    return seconds


def rent(network: Network, home: Path) -> GolemCluster:
    return GolemCluster(
        n_providers=WORKERS, budget=BUDGET, network=network, ledger=Ledger(home / "ledger.sqlite"), quiet=True
    )


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

    tiers = ("bwrap", "none") if sandbox_available() else ("none",)
    if len(tiers) == 1:
        print(f"No provider sandbox here ({sandbox_unavailable_reason()}): measuring unsandboxed workers only.")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    homes = {tier: Path(tempfile.mkdtemp(prefix=f"golem-bench-{tier}-")) for tier in tiers}
    devnets, networks = {}, {}
    startups: dict[str, list[float]] = {tier: [] for tier in tiers}
    rates: dict[str, list[float]] = {tier: [] for tier in tiers}
    clusters: dict[str, GolemCluster] = {}
    clients: dict[str, Client] = {}
    cpu = {tier: {"workers": [], "relays": []} for tier in tiers}
    spawns: dict[str, list[float]] = {tier: [] for tier in tiers}
    graphs = 0
    try:
        for tier in tiers:
            devnets[tier], networks[tier] = start_devnet(homes[tier], tier)
        for _ in range(args.rounds):  # start-up, alternating; the last cluster of each is kept
            for tier in tiers:
                if tier in clusters:
                    clients.pop(tier).close()
                    clusters.pop(tier).close()
                start = time.perf_counter()
                clusters[tier] = rent(networks[tier], homes[tier])
                startups[tier].append(time.perf_counter() - start)
                spawns[tier] += worker_startups(devnets[tier], homes[tier], clusters[tier])
                clients[tier] = Client(clusters[tier])
        for tier in tiers:
            client = clients[tier]
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            assert threads == WORKERS, "one single-threaded worker per provider, as in the LocalCluster"
            client.register_plugin(UploadFile(tasks.__file__))  # as a Dask user ships a module
            throughput(client, 200)  # warm: imports, connections
        for _ in range(args.rounds):
            for tier in tiers:
                before = provider_cpu(devnets[tier])
                rates[tier].append(throughput(clients[tier], args.tasks))
                spent = provider_cpu(devnets[tier]) - before
                for part in cpu[tier]:
                    cpu[tier][part].append(spent[part] * 1000 / args.tasks)
        for tier in tiers:
            clusters[tier].wait_for_settlement(120)
            graphs += len(clusters[tier].graphs)
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters.values():
            cluster.close()
        for devnet in devnets.values():
            devnet.stop()

    golem = tiers[0]  # what a provider runs by default
    golem_startup, golem_rate = min(startups[golem]), max(rates[golem])
    ratio = golem_rate / max(local_rates)
    rows = [
        ("start-up, 4 workers (s)", f"{golem_startup:.2f}", f"{local_startup:.2f}", f"goal <= {STARTUP_GOAL:.0f} s",
         "met" if golem_startup <= STARTUP_GOAL else "MISSED"),
        (f"{args.tasks:,} tasks (tasks/s)", f"{golem_rate:.0f}", f"{max(local_rates):.0f}",
         f"ratio {ratio:.2f}, goal >= {THROUGHPUT_GOAL}", "met" if ratio >= THROUGHPUT_GOAL else "MISSED"),
    ]  # fmt: skip
    print(f"\n{'measure':<28}{'GolemCluster':>14}{'LocalCluster':>14}   {'goal':<28}result")
    for name, measured, plain, goal, result in rows:
        print(f"{name:<28}{measured:>14}{plain:>14}   {goal:<28}{result}")
    if len(tiers) == 2:
        boxed, bare = min(startups["bwrap"]), min(startups["none"])
        sandbox_ratio = max(rates["bwrap"]) / max(rates["none"])
        worker_boxed, worker_bare = statistics.median(spawns["bwrap"]), statistics.median(spawns["none"])
        rows = [
            ("one worker's start-up (s)", f"{worker_boxed:.2f}", f"{worker_bare:.2f}",
             f"{worker_boxed - worker_bare:+.2f} s, goal <= +{SANDBOX_STARTUP_GOAL} s",
             "met" if worker_boxed - worker_bare <= SANDBOX_STARTUP_GOAL else "MISSED"),
            ("start-up, 4 workers (s)", f"{boxed:.2f}", f"{bare:.2f}",
             f"{boxed - bare:+.2f} s, goal <= +{SANDBOX_STARTUP_GOAL} s",
             "met" if boxed - bare <= SANDBOX_STARTUP_GOAL else "MISSED"),
            (f"{args.tasks:,} tasks (tasks/s)", f"{max(rates['bwrap']):.0f}", f"{max(rates['none']):.0f}",
             f"ratio {sandbox_ratio:.2f}, goal >= {SANDBOX_THROUGHPUT_GOAL}",
             "met" if sandbox_ratio >= SANDBOX_THROUGHPUT_GOAL else "MISSED"),
        ]  # fmt: skip
        print(f"\n{'GolemCluster workers':<28}{'sandboxed':>14}{'unsandboxed':>14}   {'goal':<28}result")
        for name, boxed_value, bare_value, goal, result in rows:
            print(f"{name:<28}{boxed_value:>14}{bare_value:>14}   {goal:<28}{result}")
        print(
            f"\nCPU-seconds per 1,000 tasks on the providers' side (load-independent; median of rounds): "
            f"sandboxed workers {statistics.median(cpu['bwrap']['workers']):.3f} + their relays "
            f"{statistics.median(cpu['bwrap']['relays']):.3f}, unsandboxed workers "
            f"{statistics.median(cpu['none']['workers']):.3f}."
        )
    print("\nAll rounds:")
    for tier in tiers:
        print(f"  GolemCluster, sandbox {tier!r}: start-up {[round(t, 2) for t in startups[tier]]} s "
              f"(workers, spawn to registered: {[round(t, 2) for t in sorted(spawns[tier])]} s), "
              f"tasks/s {[round(r) for r in rates[tier]]}")  # fmt: skip
    print(f"  LocalCluster: tasks/s {[round(r) for r in local_rates]}; {graphs} graphs settled on-chain.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
