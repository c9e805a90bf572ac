"""A provider's worker certificate buys the worker protocol and nothing else.

Each attack uses a genuine certificate from a real session's CA, issued the way a rented
provider gets its own (role: worker, common name: the provider's address), against the real
scheduler process of a running GolemCluster. Every handler outside the worker protocol is
refused, with a log line naming the provider; the requestor's own client keeps everything,
and the honest provider beside the attacker is still served."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client, wait
from distributed.core import rpc
from distributed.protocol.pickle import dumps
from distributed.protocol.serialize import ToPickle
from distributed.security import Security
from market_tasks import hold, square
from marketkit import Market, local_market

from golem_jupyter.chain.wallet import KEY_ENV, PASSWORD_ENV
from golem_jupyter.market.certificates import Role, certificate_role
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.scheduler.verify import ANNOTATION
from golem_jupyter.trust import WORKER_HANDLERS, PeerRefused

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("market"), providers=1) as market:
        yield market


@pytest.fixture(scope="module")
def session(market: Market) -> Iterator[tuple[GolemCluster, Client]]:
    with (
        GolemCluster(n_providers=1, budget=BUDGET, network=market.network, ledger=market.ledger()) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def worker_security(cluster: GolemCluster, directory: Path, name: str, role: Role = Role.WORKER) -> Security:
    """TLS settings holding a certificate of the session's CA, as a rented provider gets one."""
    credentials = cluster.ca.write_credentials(directory, name, role=role)
    assert certificate_role(credentials.cert_file.read_text()) == role
    return Security(
        tls_ca_file=str(credentials.ca_file),
        tls_client_cert=str(credentials.cert_file),
        tls_client_key=str(credentials.key_file),
        tls_worker_cert=str(credentials.cert_file),
        tls_worker_key=str(credentials.key_file),
        require_encryption=True,
    )


def scheduler_log(cluster: GolemCluster) -> str:
    return (cluster._workdir / "scheduler.log").read_text()


def wait_for_log(cluster: GolemCluster, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := scheduler_log(cluster)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler's log never said {text!r}:\n{log[-3000:]}")
        time.sleep(0.05)
    return log


# Handlers a hostile provider tried, or would: each with arguments that would work for a client.
ATTACKS = {
    "run_function": {"function": dumps(os.getpid), "args": dumps(()), "kwargs": dumps({}), "wait": True},
    "register_scheduler_plugin": {"plugin": dumps(object()), "name": "spy", "idempotent": False},
    "register_worker_plugin": {"plugin": dumps(object()), "name": "spy"},
    "register_nanny_plugin": {"plugin": dumps(object()), "name": "spy"},
    "scatter": {"data": {"x": 1}, "workers": None, "client": "spy", "broadcast": False},
    "get_cluster_state": {"exclude": ()},
    "dump_cluster_state_to_url": {"url": "/tmp/stolen", "exclude": (), "format": "msgpack"},
    "broadcast": {"msg": {"op": "identity"}},
    "proxy": {"msg": {"op": "identity"}, "worker": "tls://127.0.0.1:1"},
    "restart": {},
    "restart_workers": {"workers": []},
    "terminate": {},
    "feed": {"function": dumps(os.getpid)},
    "gather": {"keys": ["x"]},
    "rebalance": {},
    "replicate": {"keys": ["x"], "n": 1},
    "get_metadata": {"keys": ["x"]},
    "set_metadata": {"keys": ["x"], "value": 1},
    "get_logs": {},
    "worker_logs": {},
    "events": {},
    "get_task_stream": {},
    "call_stack": {},
    "profile": {},
    "connection_stream": {},
    "register-client": {"client": "spy", "versions": {}},
    "golem_configure": {"prices": {"x": [str(10**18), str(10**18), "0"]}, "limit": 10**18},
    "golem_meter_state": {},
    "golem_finished_graphs": {"timeout": 0},
    "golem_flush": {},
    # The verifier's controls: a liar that could turn checking off, or release its own held lie.
    "golem_verify_configure": {"fraction": 0.0},
    "golem_verify_decide": {"check_id": "any", "release": True},
    "golem_verify_events": {"timeout": 0},
    "golem_verify_fetch": {"check_id": "any", "key": "x"},
    "golem_verify_rerun": {"check_id": "any", "exclude": []},
    "golem_verify_spec": {"check_id": "any"},
    "golem_verify_inputs": {"check_id": "any"},
    "golem_verify_state": {},
    "golem_admit": {"name": "0x0000000000000000000000000000000000000001"},
    "golem_held": {},
    "dump_state": {},
    "retire_workers": {"workers": None, "names": None},  # "whatever is idle": not a worker's call
    "an_op_added_later": {},
}


def test_every_handler_outside_the_worker_protocol_is_refused_to_a_worker_certificate(session, tmp_path):
    """A genuine worker certificate of the session, under the rented provider's own name, calls
    each attack handler: each is refused (PeerRefused) and logged with the provider's name; the
    scheduler process is unchanged (still serves the client, pid the same, meter prices intact)."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    pid_before = client.run_on_scheduler(os.getpid)

    async def attack() -> dict[str, BaseException | object]:
        outcomes: dict[str, BaseException | object] = {}
        async with rpc(cluster.scheduler_address, connection_args=security.get_connection_args("client")) as r:
            for op, arguments in ATTACKS.items():
                try:
                    outcomes[op] = await getattr(r, op)(**arguments)
                except Exception as error:  # noqa: BLE001 (the refusal is what we look at)
                    outcomes[op] = error
        return outcomes

    outcomes = asyncio.run(attack())
    for op, outcome in outcomes.items():
        assert isinstance(outcome, PeerRefused), f"{op} was not refused: {outcome!r}"
        assert repr(op) in str(outcome) and provider in str(outcome)
    log = wait_for_log(cluster, "'an_op_added_later'")
    for op in ATTACKS:
        assert f"Refused request {op!r} from provider {provider} (worker certificate" in log, op
    assert set(ATTACKS).isdisjoint(WORKER_HANDLERS - {"retire_workers"})

    # Nothing changed: the same scheduler serves the requestor, and the honest provider computes.
    assert client.run_on_scheduler(os.getpid) == pid_before
    assert client.submit(square, 12).result() == 144
    assert not os.path.exists("/tmp/stolen")


def test_a_client_connection_is_refused_to_a_worker_certificate(session, tmp_path):
    """``Client(..., security=worker certificate)`` cannot register as a client: no update_graph,
    no run, no plugins; the scheduler logs the refusal."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    clients_before = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))
    with pytest.raises((OSError, TimeoutError)):  # the refusal is no stream-start: it never connects
        Client(cluster.scheduler_address, security=security, timeout=5)
    wait_for_log(cluster, f"Refused request 'register-client' from provider {provider}")
    assert client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients)) == clients_before


def test_the_requestors_client_keeps_every_handler(session):
    """The client certificate (role: requestor client) may run functions and register plugins."""
    _, client = session
    assert client.run_on_scheduler(os.getpid) > 0
    state = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.workers))
    assert state == 1
    assert client.get_metadata("nothing", default=None) is None


def test_another_providers_worker_may_only_fetch_data_from_a_worker(session, tmp_path):
    """The session's other workers are other providers: with a genuine worker certificate, one
    may fetch data from the honest provider's worker (``get_data``) but not ``run`` code on it,
    upload files or add plugins there; the requestor's client still may."""
    cluster, client = session
    [honest] = cluster.rentals
    [address] = client.scheduler_info()["workers"]
    security = worker_security(cluster, tmp_path, "0x000000000000000000000000000000000000bEEF")
    key = "held-by-the-honest-worker"
    future = client.submit(square, 6, key=key)
    assert future.result() == 36
    pid = client.run(os.getpid)[address]
    # A handler that appears after the worker started (a plugin's, say) is covered too.
    client.run(lambda dask_worker: dask_worker.handlers.__setitem__("added_later", lambda: "secret"))

    async def attack() -> dict[str, object]:
        outcomes: dict[str, object] = {}
        async with rpc(address, connection_args=security.get_connection_args("worker")) as worker:
            for op, arguments in {
                "run": {"function": dumps(os.getpid), "args": dumps(()), "kwargs": dumps({}), "wait": True},
                "run_coroutine": {"function": dumps(os.getpid), "args": dumps(()), "kwargs": dumps({})},
                "upload_file": {"filename": "evil.py", "data": b"import os", "load": True},
                "plugin-add": {"plugin": dumps(object()), "name": "spy"},
                "terminate": {},
                "get_logs": {},
                "added_later": {},
            }.items():
                try:
                    outcomes[op] = await getattr(worker, op)(**arguments)
                except Exception as error:  # noqa: BLE001 (the refusal is what we look at)
                    outcomes[op] = error
            outcomes["get_data"] = await worker.get_data(keys=[key])
        return outcomes

    outcomes = asyncio.run(attack())
    for op in ("run", "run_coroutine", "upload_file", "plugin-add", "terminate", "get_logs", "added_later"):
        assert isinstance(outcomes[op], PeerRefused), f"{op} was not refused: {outcomes[op]!r}"
    assert outcomes["get_data"]["status"] == "OK" and key in outcomes["get_data"]["data"]
    assert client.run(os.getpid)[address] == pid  # the requestor's client keeps run; the worker lives
    assert client.submit(square, 5).result() == 25
    assert honest in cluster.rentals


def test_a_worker_may_not_register_under_another_name(session, tmp_path):
    """A real dask worker with a genuine certificate for one name, started with ``--name`` of
    another (the honest provider's): the scheduler refuses the registration (logged), the worker
    never joins, and the honest worker stays the only one."""
    cluster, client = session
    [honest] = cluster.rentals
    thief = "0x000000000000000000000000000000000000dEaD"
    credentials = cluster.ca.write_credentials(tmp_path, thief, role=Role.WORKER)
    command = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        cluster.scheduler_address,
        "--name",
        honest,
        "--nthreads",
        "1",
        "--no-nanny",
        "--no-dashboard",
        "--host",
        "127.0.0.1",
        "--tls-ca-file",
        str(credentials.ca_file),
        "--tls-cert",
        str(credentials.cert_file),
        "--tls-key",
        str(credentials.key_file),
        "--death-timeout",
        "5",
    ]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_log(cluster, f"Refused request 'register-worker' from provider {thief}")
        assert f"registers as {honest!r}, but its certificate names {thief}" in scheduler_log(cluster)
        assert [str(w["name"]) for w in client.scheduler_info()["workers"].values()] == [honest]
        worker.wait(timeout=60)  # it gives up: it was never registered
        assert worker.returncode != 0
    finally:
        worker.kill()
        worker.wait()
    assert client.submit(square, 3).result() == 9


def test_the_scheduler_process_holds_no_key(market: Market, monkeypatch: pytest.MonkeyPatch):
    """With the wallet key and a keystore password in the requestor's environment, the scheduler
    process's environment and command line hold neither, and its credentials directory holds only
    its own key, never the requestor client's."""
    key = market.network.accounts[0].private_key
    key_hex = key if isinstance(key, str) else "0x" + bytes(key).hex()
    monkeypatch.setenv(KEY_ENV, key_hex)
    monkeypatch.setenv(PASSWORD_ENV, "hunter2-keystore-password")
    monkeypatch.setenv("SOME_API_TOKEN", "sk-not-for-the-scheduler")
    with (
        GolemCluster(n_providers=1, budget=BUDGET, network=market.network, ledger=market.ledger()) as cluster,
        Client(cluster) as client,
    ):
        pid = client.run_on_scheduler(os.getpid)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in (key_hex, key_hex.removeprefix("0x"), "hunter2-keystore-password", "sk-not-for-the-scheduler"):
            assert secret.encode() not in environ and secret.encode() not in cmdline
        assert KEY_ENV.encode() not in environ and PASSWORD_ENV.encode() not in environ
        credentials = Path(cmdline.split(b"\0")[cmdline.split(b"\0").index(b"--credentials") + 1].decode())
        assert sorted(p.name for p in credentials.iterdir()) == ["ca.pem", "scheduler.key", "scheduler.pem"]
        assert client.submit(square, 4).result() == 16


class _Opens:
    """Pickles as ``open(path, "w")``: unpickling it creates ``path`` (any callable would run)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.path, "w")


def test_a_pickle_in_a_workers_message_is_not_unpickled_by_the_scheduler(session, tmp_path):
    """Dask's wire format carries pickles (``ToPickle``) that the reading side unpickles as it reads
    the message, before any handler or role check runs: the requestor's client sends its graphs
    that way. The same bytes in a message from a worker certificate must not run in the
    requestor's scheduler process; the connection is refused and the scheduler serves on."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    marker = tmp_path / "pwned-by-a-message"

    async def attack() -> object:
        async with rpc(cluster.scheduler_address, connection_args=security.get_connection_args("client")) as r:
            try:
                return await asyncio.wait_for(r.identity(payload=ToPickle(_Opens(str(marker)))), 30)
            except Exception as error:  # noqa: BLE001 (the refusal is what we look at)
                return error

    outcome = asyncio.run(attack())
    assert not marker.exists(), "a worker's pickle ran in the requestor's scheduler process"
    assert isinstance(outcome, (OSError, TimeoutError)), outcome
    wait_for_log(cluster, "refused a payload")
    assert client.submit(square, 7).result() == 49


def test_a_worker_gets_committed_copies_only_of_its_own_tasks_inputs(session, tmp_path):
    """``golem_committed_data`` hands a provider's worker the scheduler's checked copy of an input a
    peer doctored, and each call has the scheduler fetch the copy from the workers holding it. A
    worker certificate gets only inputs of a task running on that provider's workers: else any
    provider could have the scheduler fetch every checked result, as often as it liked."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    with dask.annotate(**{ANNOTATION: 1e-12}):  # held to its commitment, not drawn for a check
        future = client.submit(square, 9, pure=False)
    wait(future)

    async def ask() -> dict:
        async with rpc(cluster.scheduler_address, connection_args=security.get_connection_args("client")) as r:
            return await asyncio.wait_for(r.golem_committed_data(keys=[future.key]), 30)

    answer = asyncio.run(ask())
    assert answer["status"] == "error" and list(answer["keys"]) == [future.key], answer
    assert future.result() == 81


def test_a_worker_gets_the_committed_copy_of_an_input_of_its_own_task(session, tmp_path):
    """What an honest provider's worker asks when a peer hands it a doctored input: the input of a
    task running on it, answered with the copy that matches the input's commitment."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    with dask.annotate(**{ANNOTATION: 1e-12}):
        value = client.submit(square, 5, pure=False)
        reader = client.submit(hold, value, 15.0, pure=False)
    deadline = time.monotonic() + 60
    while reader.key not in {key for keys in client.processing().values() for key in keys}:
        assert time.monotonic() < deadline, "the task reading the input never started"
        time.sleep(0.05)

    async def ask() -> dict:
        async with rpc(cluster.scheduler_address, connection_args=security.get_connection_args("client")) as r:
            return await asyncio.wait_for(r.golem_committed_data(keys=[value.key]), 30)

    assert asyncio.run(ask()) == {"status": "OK", "data": {value.key: 25}}
    assert reader.result() == 25


def test_a_workers_message_cannot_make_the_scheduler_import_a_module(session, tmp_path):
    """Dask's msgpack decoding imports the module an ``__Enum__`` value names (any module under
    dask or distributed) as it reads the message: a worker certificate's message must not make
    the requestor's scheduler process run a module it never imported."""
    cluster, client = session
    [provider] = cluster.rentals
    security = worker_security(cluster, tmp_path, provider)
    module = "distributed.chaos"
    assert not client.run_on_scheduler(_imported, module), "the test needs a module the scheduler has not imported"

    async def attack() -> object:
        async with rpc(cluster.scheduler_address, connection_args=security.get_connection_args("client")) as r:
            enum = {"__Enum__": True, "__module__": module, "__name__": "KillWorker", "name": "x"}
            try:
                return await asyncio.wait_for(r.identity(payload=enum), 30)
            except Exception as error:  # noqa: BLE001 (the refusal is what we look at)
                return error

    outcome = asyncio.run(attack())
    assert not client.run_on_scheduler(_imported, module), "a worker's message made the scheduler import a module"
    assert isinstance(outcome, (OSError, TimeoutError)), outcome
    wait_for_log(cluster, "a message asked to import this module")
    assert client.submit(square, 6).result() == 36


def _imported(module: str) -> bool:
    return module in sys.modules


def test_a_pickle_in_a_workers_answer_is_not_unpickled_by_the_scheduler(session, tmp_path):
    """The scheduler fetches results from workers (for the client's gather, for checks) and reads
    their answers: a worker that answers ``get_data`` with a pickle must not run code in the
    requestor's scheduler process. Here the rented provider's own worker turns hostile (a provider
    controls its worker completely); the client's gather fails, the scheduler lives."""
    cluster, client = session
    [address] = client.scheduler_info()["workers"]
    marker = tmp_path / "pwned-by-an-answer"
    future = client.submit(square, 8, key="answered-with-a-pickle")
    wait(future)

    def answer_with_a_pickle(dask_worker: Any, path: str) -> None:
        from distributed.protocol.serialize import ToPickle

        class Opens:  # defined here: the worker cannot import this test module
            def __reduce__(self) -> tuple[Any, ...]:
                return open, (path, "w")

        original = dask_worker.handlers["get_data"]
        dask_worker.handlers["_honest_get_data"] = original

        async def get_data(comm: Any, keys: Any = (), **kwargs: Any) -> Any:
            return {"status": "OK", "data": {key: ToPickle(Opens()) for key in keys}}

        dask_worker.handlers["get_data"] = get_data

    pid = client.run_on_scheduler(os.getpid)
    client.run(answer_with_a_pickle, path=str(marker), workers=[address])
    try:
        with pytest.raises(Exception):  # noqa: B017 (whatever the client says, nothing may have run)
            future.result(timeout=5)
        wait_for_log(cluster, "The scheduler refused a payload from")
    finally:
        client.run(
            lambda dask_worker: dask_worker.handlers.__setitem__("get_data", dask_worker.handlers["_honest_get_data"]),
            workers=[address],
        )
    assert not marker.exists(), "a worker's answer ran a pickle in the requestor's scheduler process"
    assert client.run_on_scheduler(os.getpid) == pid
    assert client.submit(square, 9).result() == 81
