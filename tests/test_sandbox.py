"""A hostile requestor against a provider's machine, before and after the sandbox.

Every attack in :mod:`hostile_tasks` is submitted as an ordinary task, through a real
``GolemCluster`` and ``Client``, to the real provider agents of a devnet (``local_market``),
twice: to agents whose workers run unconfined (sandbox ``"none"``: the attack works, which is
what the test shows first) and to agents whose workers run in their sandbox (``"bwrap"``: it
fails). The agents inherit a canary ``GOLEM_WALLET_PASSWORD``, as an agent started with its
keystore password in its environment would; each serves workers with ``--memory 512 MiB``.

Two sessions are open in each market: A rents the cheapest provider, B rents it too (a second
agreement of the same agent) and the next one. A's tasks go after the agent, its files,
``GOLEM_HOME``, session B's keys and scheduler, the host's services and the kernel's
resources. Under ``CI=true`` a machine where the sandbox cannot run fails these tests instead
of skipping them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import hostile_tasks as hostile
import psutil
import pytest
import trio
from distributed import Client
from market_tasks import square
from marketkit import TESTS, Market, agreement_with_ca, local_market, session_ca_pem, wait_until, worker_pids

import golem_jupyter
from golem_jupyter.devnet import DevnetProvider
from golem_jupyter.market.certificates import Role, SessionCA
from golem_jupyter.provider import sandbox
from golem_jupyter.provider._relay import MAX_WAITING_PER_ADDRESS, RelayConfig
from golem_jupyter.provider.sandbox import exit_code, meter_line, sandbox_unavailable_reason
from golem_jupyter.provider.workers import WorkerSpec, run_worker
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(600)

MEMORY = 512 << 20
SCRATCH = MEMORY // 4  # SandboxLimits.scratch
CANARY = "canary-keystore-password-7f3c"
BUDGET = 10**17
SANDBOX_ENVIRONMENT = {
    "PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "GOLEM_METER_FD", "GOLEM_SANDBOX_CONNECT", "GOLEM_SANDBOX_LISTEN_FD", "GOLEM_SANDBOX_CONTACT",
    "PWD", "__DASK_PARENT_PID",  # set inside: by bubblewrap (--chdir) and by the worker for its children
}  # fmt: skip


@pytest.fixture(scope="module")
def bubblewrap() -> None:
    """Skip (fail, under CI) where the sandbox cannot run."""
    reason = sandbox_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"The provider sandbox must run under CI: {reason}", pytrace=False)
    pytest.skip(f"no provider sandbox here: {reason}")


def rent(market: Market, n: int) -> GolemCluster:
    return GolemCluster(n_providers=n, budget=BUDGET, network=market.network, ledger=market.ledger(), quiet=True)


@dataclass
class Arena:
    """One market, its agents sandboxed as ``tier`` says, and the two sessions open on it."""

    tier: str
    market: Market
    client: Client
    """Session A: the attacker's, renting the cheapest provider."""
    other: GolemCluster
    """Session B: another requestor's, renting that provider too (and one more)."""
    other_client: Client
    agent: DevnetProvider
    """The provider session A rented: the one under attack."""

    @property
    def sandboxed(self) -> bool:
        return self.tier == "bwrap"

    def run(self, function, *args, timeout: float = 120):
        return self.client.submit(function, *args, pure=False).result(timeout=timeout)

    def agreement(self, cluster_or_client) -> Path:
        """The attacked agent's directory for the agreement with this session."""
        cluster = getattr(cluster_or_client, "cluster", cluster_or_client)
        return agreement_with_ca(self.market.home, self.agent.address, session_ca_pem(cluster))


@pytest.fixture(scope="module", params=["none", "bwrap"])
def arena(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, bubblewrap: None
) -> Iterator[Arena]:
    tier = request.param
    saved = os.environ.get("GOLEM_WALLET_PASSWORD")
    os.environ["GOLEM_WALLET_PASSWORD"] = CANARY  # the agents inherit it
    try:
        home = tmp_path_factory.mktemp(f"sandbox-{tier}")
        with local_market(home, providers=2, sandbox=tier, options=("--memory", str(MEMORY))) as market:
            with rent(market, 1) as cluster, Client(cluster) as client, rent(market, 2) as other:
                with Client(other) as other_client:
                    [address] = cluster.rentals
                    agent = next(p for p in market.providers if p.address == address)
                    assert address in other.rentals  # two agreements of one agent: A's and B's
                    yield Arena(tier, market, client, other, other_client, agent)
    finally:
        if saved is None:
            os.environ.pop("GOLEM_WALLET_PASSWORD", None)
        else:
            os.environ["GOLEM_WALLET_PASSWORD"] = saved


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.split("://")[-1].rpartition(":")
    return host, int(port)


def agent_is_alive(agent: DevnetProvider) -> bool:
    try:
        return psutil.Process(agent.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------- the agent's secrets


def test_the_environment_holds_nothing_of_the_agent(arena: Arena) -> None:
    """Before: the worker inherits the agent's environment, GOLEM_HOME and PYTHONPATH included
    (and, until unconfined workers lost them, its keystore password). After: an allowlist, none of
    the agent's values."""
    env = arena.run(hostile.read_environment)
    golem_root = os.path.realpath(Path(golem_jupyter.__file__).parent.parent)
    if not arena.sandboxed:
        # Unconfined, a worker gets no variable named like a secret, but the rest of the agent's.
        assert "GOLEM_WALLET_PASSWORD" not in env
        assert env["GOLEM_HOME"] == str(arena.market.home) and "PYTHONPATH" in env
        return
    # PYTHONPATH only where this checkout's golem_jupyter is not installed: its parent, nothing else.
    assert env.pop("PYTHONPATH", golem_root) == golem_root and str(TESTS) not in json.dumps(env)
    assert set(env) <= SANDBOX_ENVIRONMENT, set(env) - SANDBOX_ENVIRONMENT
    assert CANARY not in json.dumps(env) and str(arena.market.home) not in json.dumps(env)
    assert env["HOME"] == "/home/golem" and env["OMP_NUM_THREADS"] == "1"


def test_the_agent_process_is_out_of_sight(arena: Arena) -> None:
    """Before: /proc/<agent>/cmdline and environ show how it runs and its password. After: no such process."""
    found = arena.run(hostile.read_process, arena.agent.pid)
    if not arena.sandboxed:
        assert "provider run" in found["cmdline"] and CANARY in found["environ"]
        return
    assert found == {"cmdline": "FileNotFoundError(ENOENT)", "environ": "FileNotFoundError(ENOENT)"}


def test_golem_home_and_the_other_agreements_keys_are_out_of_reach(arena: Arena) -> None:
    """Before: walking GOLEM_HOME finds the devnet file (20 dev keys) and the TLS key of the
    agent's agreement with session B, readable. After: nothing is there."""
    found = arena.run(hostile.find_secrets, [str(arena.market.home)])
    b_key = str(arena.agreement(arena.other) / "worker.key")
    if not arena.sandboxed:
        readable = {f["path"] for f in found if f["read"]}
        assert str(arena.market.home / "devnet.json") in readable and b_key in readable
        return
    assert found == []


def test_another_sessions_worker_certificate_cannot_be_used_against_its_scheduler(arena: Arena) -> None:
    """Before: with the key and certificate of the agent's agreement with session B, a task of
    session A joins B's scheduler as a worker and lists B's workers. After: it reads no such file,
    and reaches no such scheduler."""
    report = arena.run(hostile.use_stolen_certificate, str(arena.agreement(arena.other)), arena.other.scheduler_address)
    if not arena.sandboxed:
        assert report["joined"], report
        assert report["workers"] == sorted(arena.other_client.scheduler_info()["workers"])
        return
    assert report == {"joined": False, "error": "reading the certificate: FileNotFoundError(ENOENT)"}


# ---------------------------------------------------------------------------- the agent's processes


def test_the_agent_cannot_be_signalled_or_traced(arena: Arena) -> None:
    """Before: the agent (the worker's parent) takes signals and a ptrace from a task (probed
    with signal 0, then detached at once). After: the task SIGKILLs the agent's pid, its own
    parent and pid 1, and PTRACE_SEIZEs the agent; the agent is out of its PID namespace, its
    parent and pid 1 are the sandbox's own init, which ignores it. The agent and the worker go on."""
    agent = arena.agent.pid
    if not arena.sandboxed:
        assert arena.run(hostile.send_signals, [agent, 0], 0) == {
            str(agent): f"delivered to {agent}",
            "0": f"delivered to {agent}",
        }
        assert arena.run(hostile.ptrace_attach, agent) == "attached"
    else:
        report = arena.run(hostile.send_signals, [agent, 0, 1], signal.SIGKILL)
        assert report[str(agent)] == "ProcessLookupError(ESRCH)", report
        assert report["0"] == report["1"] == "delivered to 1", report  # the sandbox's init, which ignores it
        assert arena.run(hostile.ptrace_attach, agent) == "ESRCH"
        time.sleep(0.5)
    assert agent_is_alive(arena.agent)
    assert arena.run(square, 12) == 144


# ---------------------------------------------------------------------------- the network


def test_the_network_reaches_the_session_and_nothing_else(arena: Arena) -> None:
    """Before: a task connects to the agent's negotiation port, the chain's RPC node, session B's
    scheduler and any local service. After: none of them, directly (only ``lo`` inside) or through
    the relay (which connects only to the session's scheduler and its workers)."""
    service = socket.create_server(("127.0.0.1", 0))  # any local service
    try:
        targets = {
            "agent": host_port(arena.agent.endpoint),
            "chain": host_port(arena.market.network.rpc_url.rstrip("/")),
            "session B's scheduler": host_port(arena.other.scheduler_address),
            "local service": service.getsockname()[:2],
        }
        direct = {name: arena.run(hostile.connect_to, *target) for name, target in targets.items()}
        relayed = {name: arena.run(hostile.ask_relay, *target) for name, target in targets.items()}
    finally:
        service.close()
    if not arena.sandboxed:
        assert set(direct.values()) == {"connected"}, direct
        return
    assert "connected" not in direct.values(), direct
    assert all(answer.startswith("NO ") for answer in relayed.values()), relayed
    own_scheduler = host_port(arena.client.scheduler.address)
    assert arena.run(hostile.ask_relay, *own_scheduler) == "OK"


def test_nobody_outside_reaches_a_socket_a_task_listens_on(arena: Arena) -> None:
    """Before: a task listens on every interface and the host connects to it. After: it listens
    in its own network namespace, which nothing outside reaches."""
    port = arena.run(hostile.listen_for_strangers, 30)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as error:
        assert arena.sandboxed, error
    if not arena.sandboxed:
        wait_until(lambda: arena.run(hostile.strangers_met) == 1, 30, "the task saw the connection")
        return
    # (An unrelated process of this host may happen to listen on the same port number; the task's
    # own count is what says whether the connection reached it.)
    time.sleep(1)
    assert arena.run(hostile.strangers_met) == 0, [c for c in psutil.net_connections() if c.laddr[1:] == (port,)]


def test_workers_of_different_providers_exchange_data(arena: Arena) -> None:
    """Session B's two workers (two providers, two sandboxes) hand a task's result to each other
    directly, through their relays: a 20 MB value made on one is the input of a task pinned to the
    other (which can only have fetched it from the first), and a value made on the second is the
    input of a task pinned to the first. (Whether the second still lists a copy afterwards is Dask's
    choice, and races with its own bookkeeping: not asserted.)"""
    client = arena.other_client
    first, second = sorted(client.scheduler_info()["workers"])
    made = client.submit(bytes, 20_000_000, workers=[first], allow_other_workers=False, pure=False)
    used = client.submit(len, made, workers=[second], allow_other_workers=False, pure=False)
    assert used.result(timeout=120) == 20_000_000
    assert set(client.who_has(used)[used.key]) == {second}
    squared = client.submit(square, 9, workers=[second], pure=False)
    again = client.submit(square, squared, workers=[first], allow_other_workers=False, pure=False)
    assert again.result(timeout=60) == 81**2


# ---------------------------------------------------------------------------- the kernel's resources


def test_a_fork_bomb_stays_inside(arena: Arena) -> None:
    """Before: 2,000 processes start. After: the pids cgroup stops them at its limit; the worker goes on."""
    report = arena.run(hostile.fork_bomb, 2000, 30.0, timeout=300)
    if not arena.sandboxed:
        assert report["started"] == 2000, report
    else:
        assert report["started"] < 256 and report["error"] == "BlockingIOError(EAGAIN)", report
    assert arena.run(square, 3) == 9


def test_scratch_space_is_limited(arena: Arena) -> None:
    """Before: a task writes twice the scratch size to the provider's disk. After: ENOSPC at the
    scratch tmpfs's size."""
    report = arena.run(hostile.fill_scratch, 2 * SCRATCH, timeout=300)
    if not arena.sandboxed:
        assert report == {"written": 2 * SCRATCH, "error": ""}
    else:
        assert report["written"] <= SCRATCH and report["error"] == "OSError(ENOSPC)", report


def test_a_symlink_out_of_scratch_leads_nowhere(arena: Arena) -> None:
    """Before: a link in the scratch directory to the devnet file (20 dev keys) reads it. After: the
    link resolves inside the sandbox, where no such file exists."""
    report = arena.run(hostile.escape_by_symlink, str(arena.market.home / "devnet.json"))
    assert report["read"] is not arena.sandboxed, report


def test_background_threads_are_capped_and_metered(arena: Arena) -> None:
    """Four threads a task leaves burning CPU (GIL released) after it returned. Before: nobody
    meters them: the provider's meter counts task time only. After: the CPU quota holds them to the
    agreement's one thread, and the provider's meter counts every CPU-second the sandbox used."""
    meter_file = arena.agreement(arena.client) / "meter.json"
    wait_until(lambda: read_meter(meter_file)["executing"] == 0, 30, "the worker is idle")
    time.sleep(0.5)  # the meter writes at most every 0.2 s
    before = read_meter(meter_file)
    start = time.monotonic()
    arena.run(hostile.spin_after_return, 4, 2.0)
    time.sleep(3)  # no task runs meanwhile: what the threads take, no task is slowed by
    wait_until(lambda: len(arena.run(hostile.background_cpu)) == 4, 60, "the four threads finished", 1.0)
    wall = time.monotonic() - start
    spent = sum(arena.run(hostile.background_cpu))
    time.sleep(1.5)  # the agent writes the sandbox's usage every second
    after = read_meter(meter_file)
    report = f"threads spent {spent:.2f} CPU-s in {wall:.2f} s; meter before {before}, after {after}"
    assert spent > 0.1, report
    if not arena.sandboxed:  # the meter counts the tasks' own time (they return at once), not the threads'
        assert after["cpu_seconds"] - before["cpu_seconds"] < min(0.5, spent / 2), report
        assert "sandbox_cpu_seconds" not in after, report
        return
    assert after["sandbox_cpu_seconds"] - before["sandbox_cpu_seconds"] >= spent, report
    assert spent <= 1.0 * wall + 0.25, report  # one thread's worth of CPU, whatever the threads do
    [quota] = Path("/sys/fs/cgroup/cpu").glob(f"golem-{meter_file.parent.name}-*/cpu.cfs_quota_us")
    assert int(quota.read_text()) == 100_000 == int((quota.parent / "cpu.cfs_period_us").read_text())


def test_the_meter_channel_takes_junk_without_harm(arena: Arena) -> None:
    """After only: a task writes junk, forged negative totals and an endless line into the meter's
    pipe; the agent's meter file keeps the last well-formed totals and goes on counting."""
    if not arena.sandboxed:
        assert arena.run(hostile.scribble_on_the_meter) == "no meter channel"
        return
    meter_file = arena.agreement(arena.client) / "meter.json"
    before = read_meter(meter_file)
    assert arena.run(hostile.scribble_on_the_meter) == "scribbled"
    assert arena.run(square, 4) == 16
    wait_until(lambda: read_meter(meter_file)["tasks"] >= before["tasks"] + 2, 30, "the meter counts on")
    after = read_meter(meter_file)
    assert after["cpu_seconds"] >= before["cpu_seconds"] >= 0


def test_a_flood_of_junk_on_the_meter_channel_costs_the_agent_little(arena: Arena) -> None:
    """Before: a task writing junk lines into the meter's pipe as fast as it could kept the agent's
    one thread parsing them, at 98% of a core, and every agreement and negotiation waited. After:
    the agent reads the pipe at most every 50 ms and parses only the newest line of each read."""
    if not arena.sandboxed:
        pytest.skip("an unsandboxed worker writes its meter file itself: there is no channel")
    agent = psutil.Process(arena.agent.pid)
    before, started = agent.cpu_times(), time.monotonic()
    written = arena.run(hostile.flood_the_meter, 4.0)
    after, elapsed = agent.cpu_times(), time.monotonic() - started
    used = (after.user + after.system) - (before.user + before.system)
    print(f"the task wrote {written >> 20} MiB of junk; the agent used {used:.2f} CPU-s in {elapsed:.1f} s")
    assert written > 1 << 20
    assert used < 0.25 * elapsed
    assert arena.run(square, 7) == 49


def test_idle_connections_to_a_workers_port_do_not_shut_its_peers_out(arena: Arena) -> None:
    """Before: 530 idle connections to a sandboxed worker's contact address took all of the relay's
    512 and 1,000 threads, and no peer could reach the worker until the flood ended. After: a
    connection costs no thread until its peer speaks, and at most MAX_WAITING_PER_ADDRESS wait from
    one address, each for FIRST_BYTE_TIMEOUT; a peer from another address is let in meanwhile."""
    if not arena.sandboxed:
        pytest.skip("without a sandbox the worker listens itself: no relay")
    workers = {str(w["name"]): a for a, w in arena.other_client.scheduler_info()["workers"].items()}
    host, port = host_port(workers[arena.agent.address])
    flood = []
    try:
        for _ in range(530):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))  # the stranger's address; the peer below speaks from 127.0.0.1
            sock.connect((host, port))
            flood.append(sock)
        wait_until(
            lambda: sum(_still_open(sock) for sock in flood) <= MAX_WAITING_PER_ADDRESS,
            30,
            f"the relay keeps at most {MAX_WAITING_PER_ADDRESS} of the stranger's connections",
        )
        peer = socket.create_connection((host, port), timeout=10)
        peer.sendall(b"\x16\x03\x01")  # the first bytes of a TLS handshake: the relay passes them on
        with peer:
            relayed = _relay_threads(arena.agent)
    finally:
        for sock in flood:
            sock.close()
    assert relayed < 100, f"the relay runs {relayed} threads"
    on_the_agent = arena.other_client.submit(square, 6, workers=[workers[arena.agent.address]], pure=False)
    assert on_the_agent.result(timeout=60) == 36


def _still_open(sock: socket.socket) -> bool:
    """Whether the other end has not closed ``sock`` (nothing was ever sent on it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _relay_threads(agent: DevnetProvider) -> int:
    return sum(
        p.num_threads()
        for p in psutil.Process(agent.pid).children(recursive=True)
        if "golem_jupyter.provider._relay" in " ".join(p.cmdline())
    )


def test_a_worker_past_its_memory_limit_is_ended_and_the_agent_says_why(arena: Arena) -> None:
    """Before: a task holds 1.5 GiB in a worker started with --memory 512 MiB. After: the kernel
    ends the worker; the requestor's task fails (no worker is left to run it), the agent's log and
    the agreement's end say it was the memory limit, the requestor's cluster learns it from the
    provider (``lost_workers``, which a %%golem cell's error quotes), and the agent serves its other
    agreement (session B's). Session A loses its worker: this runs last."""
    future = arena.client.submit(hostile.allocate, 3 << 29, pure=False)
    if not arena.sandboxed:
        assert future.result(timeout=120) == 3 << 29
        return
    with pytest.raises(Exception) as failure:  # what the requestor sees today: printed
        future.result(timeout=120)
    print(f"the requestor sees: {type(failure.value).__name__}: {failure.value}")
    message = "worker exited with code -9: killed by the kernel for going past its memory limit of 512 MiB"
    wait_until(lambda: message in arena.market.log(arena.agent), 30, "the agent logs why the worker ended")
    lost = arena.client.cluster.lost_workers  # the requestor asked the provider why
    wait_until(lambda: arena.agent.address in lost, 30, "the requestor learns why its worker ended")
    assert message in lost[arena.agent.address]
    assert agent_is_alive(arena.agent)
    workers = {str(w["name"]): a for a, w in arena.other_client.scheduler_info()["workers"].items()}
    on_the_agent = arena.other_client.submit(square, 11, workers=[workers[arena.agent.address]], pure=False)
    assert on_the_agent.result(timeout=60) == 121


# ---------------------------------------------------------------------------- the sandbox's own parts


def test_a_sandboxed_worker_dies_with_its_agent(tmp_path: Path, bubblewrap: None) -> None:
    """SIGKILL an agent (no chance to clean up): its sandboxed worker and its relay die with it,
    however long the agent had been idle before (the parent-death signal is tied to the thread
    that spawned them, which lives as long as the agent)."""
    with local_market(tmp_path, providers=1, sandbox="bwrap") as market:
        [agent] = market.providers
        with rent(market, 1) as cluster, Client(cluster) as client:
            [pid] = worker_pids(market, client).values()
            time.sleep(12)  # longer than trio's idle worker threads live
            assert client.submit(square, 5, pure=False).result(timeout=60) == 25
            helpers = [p for p in psutil.Process(agent.pid).children(recursive=True) if p.pid != pid]
            assert any("golem_jupyter.provider._relay" in " ".join(p.cmdline()) for p in helpers)
            os.kill(agent.pid, signal.SIGKILL)
            gone = [psutil.Process(pid), *helpers]
            wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in gone), 30, "all died")


def _ask_relay(connect_path: Path, host: str, port: int) -> str:
    """What the relay answers a task asking for ``host:port`` (and what comes after an OK)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(connect_path))
        sock.sendall(f"{host} {port}\n".encode())
        data = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(4096):
                data += chunk
                if b"\n" in data and not data.startswith(b"OK"):
                    break
                if data.count(b"\n") >= 2:
                    break
    return data.decode(errors="replace").strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace with its own /etc/hosts")
def test_a_scheduler_name_that_resolves_to_a_second_address_opens_only_the_first(tmp_path: Path) -> None:
    """A requestor names its scheduler ``sched.attacker.test``, which resolves to its scheduler
    ([::1]:PORT) and to a service of the provider's machine on the same port (127.0.0.1:PORT).
    Before: the relay let a task connect to every address the name resolved to, and the task read
    the service. After: only the first (the one the worker reaches its scheduler at); the other
    must prove a session worker's certificate like any address, and cannot."""
    ca = SessionCA.create()
    (tmp_path / "ca.pem").write_text(ca.certificate_pem)
    cert, key = ca.issue_own("0xprovider", role=Role.WORKER)
    (tmp_path / "worker.pem").write_text(cert)
    (tmp_path / "worker.key").write_text(key)
    scheduler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    scheduler.bind(("::1", 0))
    scheduler.listen()
    port = scheduler.getsockname()[1]
    victim = socket.create_server(("127.0.0.1", port))

    def serve_victim() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = victim.accept()
                conn.sendall(b"secret of a local service\n")
                conn.close()

    threading.Thread(target=serve_victim, daemon=True).start()
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 sched.attacker.test\n127.0.0.1 sched.attacker.test\n127.0.0.1 localhost\n")
    inbound = socket.create_server(("127.0.0.1", 0))
    connect_path, worker_path = tmp_path / "connect.sock", tmp_path / "worker.sock"
    connect, worker = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    connect.bind(str(connect_path))
    connect.listen(16)
    worker.bind(str(worker_path))
    worker.listen(16)
    config = RelayConfig(
        inbound_fd=inbound.fileno(),
        connect_fd=connect.fileno(),
        worker_socket=str(worker_path),
        scheduler=("sched.attacker.test", port),
        ca_file=str(tmp_path / "ca.pem"),
        cert_file=str(tmp_path / "worker.pem"),
        key_file=str(tmp_path / "worker.key"),
        peer_role="worker",
        agent_pid=os.getpid(),
        label="attack",
    )
    shell = f'mount --bind {hosts} /etc/hosts && exec {sys.executable} -m golem_jupyter.provider._relay "$0"'
    relay = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", shell, config.to_json()], pass_fds=(inbound.fileno(), connect.fileno())
    )
    try:
        assert _ask_relay(connect_path, "sched.attacker.test", port).startswith("OK")  # waits for the relay
        answer = _ask_relay(connect_path, "127.0.0.1", port)
        assert answer.startswith("NO") and "secret" not in answer, answer
    finally:
        relay.terminate()
        relay.wait(30)
        for sock in (scheduler, victim, inbound, connect, worker):
            sock.close()


def test_the_meter_channel_keeps_only_well_formed_totals() -> None:
    good = {"cpu_seconds": 1.5, "gpu_seconds": 0, "tasks": 3, "executing": 0, "last_change": 10.0}
    assert meter_line(json.dumps(good).encode()) == {**good, "gpu_seconds": 0.0}
    for bad in (b"", b"[]", b"{", b"\xff", json.dumps({**good, "cpu_seconds": -1}).encode(),
                json.dumps({**good, "tasks": 1.5}).encode(), json.dumps({**good, "cpu_seconds": "1"}).encode(),
                b"[" * 100_000, b"{" * 4000, b'{"a": {"b": 1}}'):  # fmt: skip
        assert meter_line(bad) is None, bad


def test_bubblewrap_exit_codes_read_as_an_unsandboxed_workers() -> None:
    assert [exit_code(code) for code in (0, 1, 125, 137, 143)] == [0, 1, 125, -9, -15]


def test_without_bubblewrap_a_worker_is_refused_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent whose sandbox is "bwrap" on a machine that cannot run it starts no worker: the
    agreement ends with the reason, in its log too. Only an explicit "none" runs one unconfined."""
    monkeypatch.setattr(sandbox, "sandbox_unavailable_reason", lambda: "bubblewrap is not installed")
    worker = WorkerSpec("tls://127.0.0.1:1", "0xprovider", tmp_path, nthreads=1, gpus=0, memory_limit=MEMORY)
    ended = trio.run(run_worker, worker)
    assert ended.reason == "refused to start the worker without its sandbox: bubblewrap is not installed"
    assert ended.reason in (tmp_path / "worker.log").read_text()
    assert not any(str(tmp_path) in " ".join(p.cmdline()) for p in psutil.Process().children(recursive=True))
    assert trio.run(run_worker, replace(worker, sandbox="nothing")).reason.startswith("refused")
