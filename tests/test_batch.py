"""``golem run NOTEBOOK`` as a user runs it: the real command, a real kernel, a real market.

The example notebooks run on a market that ``golem run`` starts and stops itself. The other
tests share one devnet (``--network FILE``) to save the start-up, and write small notebooks of
their own: one per exit code, parameters, the run's budget, Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from eth_utils import to_checksum_address
from marketkit import assert_ledger_paid_as_metered, assert_paid_as_metered, local_market, wait_until

from golem_jupyter.batch import CellBill, ExitCode, bill, bill_table
from golem_jupyter.ledger import Ledger, Payout
from golem_jupyter.provider.gpu import detect_gpus
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TX = re.compile(r"0x[0-9a-f]{64}")
GWEI = 10**9


def golem_run(home: Path, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOLEM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("GOLEM_NETWORK", "GOLEM_BUDGET", "GOLEM_RUN_ID", "GOLEM_DISPLAY"):
        env.pop(name, None)
    command = [sys.executable, "-m", "golem_jupyter.cli", "run", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def write_notebook(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    """A notebook for the Golem kernel; a cell is its source, or (source, tags)."""
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "golem-python", "display_name": "Golem (Python 3)", "language": "python"}}
    )
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        code = nbformat.v4.new_code_cell(source)
        if tags:
            code.metadata["tags"] = tags
        nb.cells.append(code)
    nbformat.write(nb, path)
    return path


def read(path: Path):
    return nbformat.read(path, as_version=4)


def text_of(cell) -> str:
    """Everything a cell showed: streams, values, and errors as "Name: value"."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def cell_with(nb, fragment: str):
    return next(c for c in code_cells(nb) if fragment in c.source)


def single_run(home: Path):
    with Ledger(home / "ledger.sqlite") as ledger:
        runs = ledger.runs()
    assert len(runs) == 1
    return runs[0]


def paid_as_metered(home: Path, run) -> int:
    """``golem run`` ran on a market of its own under ``home``, gone now with its chain: assert that
    the run's confirmed graphs paid each provider what its own meter says, and return the total."""
    with Ledger(home / "ledger.sqlite") as ledger:
        sessions = ledger.sessions(run_id=run.run_id)
        return sum(assert_ledger_paid_as_metered(home, ledger, s.session_id) for s in sessions)


def paid_on_chain_as_metered(market, home: Path, run) -> int:
    """``golem run`` ran on the shared ``market`` (its ledger under ``home``): assert that the chain
    paid each provider of the run's sessions what its own meter says, and return the total."""
    with Ledger(home / "ledger.sqlite") as ledger:
        return sum(
            assert_paid_as_metered(market, s.session_id, a.provider, ledger=ledger)
            for s in ledger.sessions(run_id=run.run_id)
            for a in ledger.agreements(s.session_id)
        )


def assert_port_closed(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(1)
        s.connect((host, int(port)))


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    with local_market(tmp_path_factory.mktemp("batch-market"), providers=2) as market:
        yield market


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


# ---------------------------------------------------------------------- the example notebooks, each on its own market


def test_quickstart_runs_on_a_market_of_its_own_and_prints_the_bill(home, tmp_path):
    result = golem_run(home, str(NOTEBOOKS / "quickstart.ipynb"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    out = result.stdout
    assert "Starting an embedded market" in out and "Market stopped" in out
    rpc_url = re.search(r"Market ready: chain \d+ at (\S+)", out).group(1)
    assert_port_closed(rpc_url)  # the chain it started is gone, and its providers with it
    assert not list(home.glob("devnet*.json"))

    nb = read(tmp_path / "quickstart.out.ipynb")
    assert "pi is about 3.1" in text_of(cell_with(nb, "pi is about"))
    assert "mean " in text_of(cell_with(nb, "da.stack"))
    assert all(c.metadata.papermill["status"] == "completed" for c in code_cells(nb))
    assert all(c.metadata.papermill["duration"] >= 0 for c in code_cells(nb))

    # One row per cell that ran graphs: the Monte Carlo fan-out, the sweep, the dask.array cell.
    rows = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if line.startswith("  In [")}
    billed = [c for c in code_cells(nb) if "golem" in c.metadata]
    assert {f"In [{c.execution_count}]" for c in billed} == set(rows)
    assert len(billed) == 3
    pi_cell = cell_with(nb, "hits = [darts")
    meta = pi_cell.metadata.golem
    assert int(meta["amount_wei"]) > 0 and len(meta["providers"]) == 2  # fanned out across both providers
    for graph in (g for c in billed for g in c.metadata.golem["graphs"]):
        assert graph["status"] == "confirmed" and TX.fullmatch(graph["tx_hash"])
        assert graph["tx_hash"] in out
    assert "(pending)" not in out

    run = single_run(home)
    assert (run.status, run.exit_code, run.sessions) == ("succeeded", 0, 1)
    assert run.spent == run.settled == int(nb.metadata.golem["total_wei"]) > 0
    assert paid_as_metered(home, run) == run.settled  # the bill is what the providers metered
    assert run.output == str(tmp_path / "quickstart.out.ipynb")
    assert "total" in out and f"{run.run_id[:10]}" in out


def test_budget_notebook_shows_the_cap_stopping_a_cell(home, tmp_path):
    result = golem_run(home, str(NOTEBOOKS / "budget.ipynb"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "raises-exception" in result.stdout

    nb = read(tmp_path / "budget.out.ipynb")
    capped = cell_with(nb, "spins = [busy")
    assert "BudgetExceeded: This cell's budget of 5 gwei is spent" in text_of(capped)
    assert "spins was written back: False" in text_of(cell_with(nb, "written back"))
    paid = int(capped.metadata.golem["amount_wei"])
    assert 5 * GWEI <= paid < 10 * GWEI  # the guard stopped it near its cap, and what ran is paid ...
    run = single_run(home)
    assert paid_as_metered(home, run) == run.settled  # ... as the providers metered it
    assert capped.metadata.golem["graphs"][0]["status"] == "confirmed"
    assert "budget 0.002 ETH" in text_of(cell_with(nb, "%golem budget 0.002"))


def test_gpu_matmul_without_gpus_explains_and_runs_on_numpy(home, tmp_path):
    result = golem_run(home, str(NOTEBOOKS / "gpu-matmul.ipynb"), "--gpu-providers", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nb = read(tmp_path / "gpu-matmul.out.ipynb")
    assert "No provider on this market offers a GPU" in text_of(cell_with(nb, "gpu_offers ="))
    results = text_of(cell_with(nb, "for seed, (checksum"))
    assert results.count("with numpy") == 4 and "GFLOP/s" in results


@pytest.mark.skipif(detect_gpus().count == 0, reason="needs CuPy and an NVIDIA GPU")
def test_gpu_matmul_on_a_gpu_provider_uses_cupy(home, tmp_path):
    result = golem_run(home, str(NOTEBOOKS / "gpu-matmul.ipynb"), "--gpu-providers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nb = read(tmp_path / "gpu-matmul.out.ipynb")
    assert "GPU provider(s) on the market" in text_of(cell_with(nb, "gpu_offers ="))
    assert text_of(cell_with(nb, "for seed, (checksum")).count("with cupy") == 4


# ---------------------------------------------------------------------- parameters and options, on a shared market


def test_parameters_from_a_file_and_the_command_line(home, tmp_path, market):
    notebook = write_notebook(
        tmp_path / "params.ipynb",
        ('a = 1\nb = "x"\nsize = 2', ["parameters"]),
        "%%golem\nsquares = [i * i for i in range(size)]",
        "print(a, b, squares)",
    )
    params = tmp_path / "params.yaml"
    params.write_text("a: 5\nb: from-file\nsize: 4\n")
    result = golem_run(
        home,
        str(notebook),
        "--network", str(market.home / "devnet.json"),
        "-f", str(params),
        "-p", "b", "from-cli",
        "-p", "unknown", "1",
        "-o", str(tmp_path / "out" / "params-run.ipynb"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not define unknown" in result.stdout
    nb = read(tmp_path / "out" / "params-run.ipynb")
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "a = 5" in injected.source and 'b = "from-cli"' in injected.source
    assert text_of(cell_with(nb, "print(a, b")).strip() == "5 from-cli [0, 1, 4, 9]"
    assert single_run(home).parameters == {"a": 5, "b": "from-cli", "size": 4, "unknown": 1}
    assert "Starting an embedded market" not in result.stdout


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` processes that spin on the CPU until the block ends: a busy machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_every_graph_is_billed_to_the_cell_that_sent_it_on_a_busy_machine(home, tmp_path, market):
    """Two processes spin beside ``golem run``, and the scheduler stalls while a cell sends futures.
    Before: graphs were billed to a cell by comparing the kernel's and the scheduler's clocks, and a
    graph the scheduler took in late went to the cell after the one that sent it. After: each graph
    carries its cell's label from the client that submitted it, so the bill, the output notebook's
    metadata and the ledger name the cells that sent graphs (two %%golem cells, a plain Dask call,
    and futures sent by one cell and gathered by the next) and none of the cells between them."""
    notebook = write_notebook(
        tmp_path / "cells.ipynb",
        "%%golem\nsquares = [i * i for i in range(16)]",
        "between = 1",
        "%%golem\nplus_one = [i + 1 for i in range(16)]",
        "from distributed import get_client\ntotal = get_client().submit(sum, [1, 2, 3]).result()",
        "after = 2",
        # The scheduler stalls (as on a busy machine) while this cell sends futures and ends; it
        # takes in the graph only once the next cell has begun.
        "import os, signal\nstalled = get_client().run_on_scheduler(os.getpid)\nos.kill(stalled, signal.SIGSTOP)\n"
        "pending = get_client().map(abs, range(-20, 0))",
        "os.kill(stalled, signal.SIGCONT)\n"
        "print(squares[3], plus_one[3], total, between, after, sum(get_client().gather(pending)))",
    )
    with busy_processes(2):
        result = golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nb = read(tmp_path / "cells.out.ipynb")
    assert text_of(cell_with(nb, "print(squares")).strip() == "9 4 6 1 2 210"
    billed = {c.execution_count for c in code_cells(nb) if "golem" in c.metadata}
    fragments = ("squares = [", "plus_one = [", "total = get_client", "pending = get_client")  # not SIGCONT's
    sent = {cell_with(nb, fragment).execution_count for fragment in fragments}
    assert billed == sent, (billed, sent)
    rows = {int(line.split()[1].strip("[]")) for line in result.stdout.splitlines() if line.startswith("  In [")}
    assert rows == sent
    with Ledger(home / "ledger.sqlite") as ledger:
        [session] = ledger.sessions(run_id=single_run(home).run_id)
        labels = {g.label for g in ledger.graphs(session_id=session.session_id)}
    assert labels == {f"In [{n}]" for n in sent}


def test_the_runs_budget_bounds_what_the_notebook_deposits(home, tmp_path, market):
    notebook = write_notebook(
        tmp_path / "greedy.ipynb",
        "%golem connect --budget 0.01",
        ("%golem budget 0.02", ["raises-exception"]),
        "%%golem\nx = sum(range(10))",
    )
    result = golem_run(
        home, str(notebook), "--network", str(market.home / "devnet.json"), "--budget", "20gwei", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    nb = read(tmp_path / "greedy.out.ipynb")
    assert "budget lowered to 20 gwei" in text_of(nb.cells[0])
    assert "BudgetExceeded" in text_of(nb.cells[1])
    assert single_run(home).budget == 20 * GWEI


def test_the_kernels_working_directory_is_the_notebooks_unless_cwd_says_otherwise(home, tmp_path, market):
    folder = tmp_path / "nbdir"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    notebook = write_notebook(folder / "where.ipynb", "import os\nprint(os.getcwd())")
    network = str(market.home / "devnet.json")
    golem_run(home, str(notebook), "--network", network, cwd=tmp_path)
    assert text_of(read(tmp_path / "where.out.ipynb").cells[0]).strip() == str(folder)
    golem_run(home, str(notebook), "--network", network, "--cwd", str(elsewhere), cwd=tmp_path)
    assert text_of(read(tmp_path / "where.out.ipynb").cells[0]).strip() == str(elsewhere)


# ---------------------------------------------------------------------- exit codes


def test_a_failing_cell_exits_1_and_the_output_shows_the_error_on_top(home, tmp_path, market):
    notebook = write_notebook(tmp_path / "fails.ipynb", "x = 1", "%%golem\ny = x / 0", "z = 3")
    result = golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    assert result.returncode == ExitCode.CELL_ERROR == 1, result.stdout + result.stderr
    assert "ZeroDivisionError" in result.stdout

    nb = read(tmp_path / "fails.out.ipynb")
    banner = nb.cells[0]
    assert banner.cell_type == "markdown" and "golem run failed" in banner.source
    assert "ZeroDivisionError" in banner.source and "exit code 1" in banner.source
    anchor = nb.cells[2]  # just before the failing cell
    assert anchor.cell_type == "markdown" and "stopped here" in anchor.source
    failing = nb.cells[3]
    assert failing.metadata.papermill["status"] == "failed"
    assert "ZeroDivisionError" in text_of(failing)
    assert nb.cells[4].metadata.papermill["status"] == "pending"  # never ran
    assert nb.metadata.golem["exit_code"] == 1

    run = single_run(home)
    assert (run.status, run.exit_code) == ("failed", 1)
    assert run.error.startswith("ZeroDivisionError")


def test_budget_exceeded_exits_3(home, tmp_path, market):
    notebook = write_notebook(
        tmp_path / "spend.ipynb",
        "%%golem --budget 1gwei\nimport time\n"
        "def busy(s):\n    end = time.perf_counter() + s\n    while time.perf_counter() < end:\n        pass\n"
        "spins = [busy(0.3) for _ in range(30)]",
    )
    result = golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    assert result.returncode == ExitCode.BUDGET_EXCEEDED == 3, result.stdout + result.stderr
    run = single_run(home)
    assert run.exit_code == 3 and run.error.startswith("BudgetExceeded")
    assert run.settled > 0  # what ran before the guard stopped it is paid ...
    assert paid_on_chain_as_metered(market, home, run) == run.settled  # ... as each provider metered it


def test_an_unreachable_network_exits_4(home, tmp_path):
    notebook = write_notebook(tmp_path / "nowhere.ipynb", "x = 1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    result = golem_run(home, str(notebook), "--network", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == ExitCode.NETWORK_UNREACHABLE == 4, result.stdout + result.stderr
    assert "did not answer" in result.stdout or "not reachable" in result.stdout.lower()
    nb = read(tmp_path / "nowhere.out.ipynb")
    assert "golem run failed" in nb.cells[0].source and "exit code 4" in nb.cells[0].source
    assert single_run(home).exit_code == 4


def test_a_network_that_goes_unreachable_inside_a_cell_exits_4(home, tmp_path, market):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notebook = write_notebook(tmp_path / "lost.ipynb", f"%golem connect http://127.0.0.1:{port}")
    result = golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr


def test_a_dead_kernel_exits_5(home, tmp_path, market):
    notebook = write_notebook(tmp_path / "dies.ipynb", "x = 1", "import os\nos._exit(3)", "y = 2")
    result = golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    assert result.returncode == ExitCode.KERNEL_DIED == 5, result.stdout + result.stderr
    nb = read(tmp_path / "dies.out.ipynb")
    assert "exit code 5" in nb.cells[0].source
    assert cell_with(nb, "os._exit").metadata.papermill["status"] == "failed"
    assert single_run(home).exit_code == 5


def test_a_cell_past_the_timeout_is_interrupted_settled_and_exits_6(home, tmp_path, market):
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "%golem connect",  # renting takes a few seconds: not in the timed cell
        "%%golem\nimport time\n"
        "def busy(s):\n    end = time.perf_counter() + s\n    while time.perf_counter() < end:\n        pass\n"
        "spins = [busy(1.0) for _ in range(60)]",
    )
    started = time.monotonic()
    result = golem_run(
        home, str(notebook), "--network", str(market.home / "devnet.json"), "--timeout", "10", cwd=tmp_path
    )
    assert result.returncode == ExitCode.TIMEOUT == 6, result.stdout + result.stderr
    assert time.monotonic() - started < 50  # 30 s of work on two providers was cut short
    nb = read(tmp_path / "slow.out.ipynb")
    graphs = cell_with(nb, "spins = ").metadata.golem["graphs"]
    assert graphs[0]["status"] == "confirmed" and int(graphs[0]["amount_wei"]) > 0
    run = single_run(home)
    assert run.error.startswith("CellTimeoutError")
    assert paid_on_chain_as_metered(market, home, run) == run.settled  # what ran is paid, as metered


def test_ctrl_c_interrupts_the_cell_settles_and_stops_the_market(home, tmp_path):
    notebook = write_notebook(
        tmp_path / "long.ipynb",
        "%golem connect",  # connected before the long cell starts, however slow the machine
        "%%golem\nimport time\n"
        "def busy(s):\n    end = time.perf_counter() + s\n    while time.perf_counter() < end:\n        pass\n"
        "spins = [busy(1.0) for _ in range(120)]",
    )
    env = {**os.environ, "GOLEM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "golem_jupyter.cli", "run", str(notebook)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "In [1]" in line:
                break

        def finished_on_the_providers() -> int:  # as the providers' own meters (under GOLEM_HOME) count
            return sum(read_meter(meter)["tasks"] for meter in home.glob("provider/*/agreements/*/meter.json"))

        # Well into the long cell (120 one-second tasks on two providers): both have finished some.
        wait_until(lambda: finished_on_the_providers() >= 4 or process.poll() is not None, 120, "tasks have run")
        assert process.poll() is None, "".join(lines)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    out = "".join(lines) + rest
    assert process.returncode == ExitCode.INTERRUPTED == 130, out
    assert "interrupting the kernel" in out and "Market stopped" in out
    rpc_url = re.search(r"Market ready: chain \d+ at (\S+)", out).group(1)
    assert_port_closed(rpc_url)
    run = single_run(home)
    assert (run.status, run.exit_code) == ("interrupted", 130)
    assert run.settled > 0  # the interrupted graph was paid for what it ran ...
    assert paid_as_metered(home, run) == run.settled  # ... as the providers metered it
    nb = read(tmp_path / "long.out.ipynb")
    assert "KeyboardInterrupt" in text_of(cell_with(nb, "spins = "))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ipynb"], "No notebook at"),
        (["broken.ipynb"], "is not a valid notebook"),
        (["ok.ipynb", "--kernel", "no-such-kernel"], "No kernel named 'no-such-kernel'"),
        (["ok.ipynb", "-f", "missing.yaml"], "Cannot read the parameters file"),
        (["ok.ipynb", "-f", "list.yaml"], "must hold a mapping"),
        (["ok.ipynb", "--budget", "lots"], "is not an amount"),
        (["ok.ipynb", "--timeout", "0"], "--timeout needs"),
        (["ok.ipynb", "--cwd", "missing-dir"], "is not a directory"),
    ],
)
def test_bad_arguments_exit_2_before_anything_starts(home, tmp_path, args, message):
    write_notebook(tmp_path / "ok.ipynb", "x = 1")
    (tmp_path / "broken.ipynb").write_text("{ this is not json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    result = golem_run(home, *args, cwd=tmp_path, timeout=60)
    assert result.returncode == ExitCode.USAGE == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Starting an embedded market" not in result.stdout
    if (home / "ledger.sqlite").exists():
        with Ledger(home / "ledger.sqlite") as ledger:
            assert ledger.runs() == []


def test_help_documents_the_exit_codes(tmp_path):
    result = golem_run(tmp_path, "--help", cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    for code in ExitCode:
        assert f"\n  {int(code):<4} " in result.stdout


def test_golem_ledger_lists_the_runs(home, tmp_path, market):
    notebook = write_notebook(tmp_path / "tiny.ipynb", "%%golem\nx = 2 + 2")
    golem_run(home, str(notebook), "--network", str(market.home / "devnet.json"), cwd=tmp_path)
    env = {**os.environ, "GOLEM_HOME": str(home)}
    listed = subprocess.run(
        [sys.executable, "-m", "golem_jupyter.cli", "ledger", "runs"], env=env, capture_output=True, text=True
    )
    run = single_run(home)
    assert run.run_id[:10] in listed.stdout and "succeeded" in listed.stdout and "tiny.ipynb" in listed.stdout


# ---------------------------------------------------------------------- the kernel


def test_the_golem_kernel_is_installed_with_a_logo_and_preloads_the_extension():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    spec_dir = Path(KernelSpecManager().find_kernel_specs()["golem-python"])
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Golem (Python 3)" and spec["language"] == "python"
    assert (spec_dir / "logo-64x64.png").read_bytes().startswith(b"\x89PNG")
    assert (spec_dir / "logo-32x32.png").exists() and (spec_dir / "logo-svg.svg").exists()
    assert json.loads((ROOT / "kernels" / "golem-python" / "kernel.json").read_text()) == spec

    km, kc = start_new_kernel(kernel_name="golem-python")
    try:
        outputs = []
        reply = kc.execute_interactive(
            "print(sorted(get_ipython().magics_manager.magics['cell']).count('golem'))",
            output_hook=lambda msg: outputs.append(msg),
            timeout=60,
        )
        assert reply["content"]["status"] == "ok"
        assert [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"] == ["1\n"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# ---------------------------------------------------------------------- the bill, from a ledger


def _graph(ledger: Ledger, session: str, n: int, label: str | None, amount: int, provider: str) -> str:
    graph_id = "0x" + f"{n:064x}"
    ledger.record_graph(
        session_id=session,
        graph_id=graph_id,
        n_tasks=3,
        result_root="0x" + "ab" * 32,
        payouts=[Payout(provider, 1.5, 0.0, amount, amount * n)],
        label=label,
    )
    return graph_id


def test_the_bill_groups_graphs_by_cell_in_cell_order(tmp_path):
    run_id = "0x" + "11" * 32
    session = "0x" + "22" * 32
    a, b = (to_checksum_address("0x" + c * 20) for c in ("aa", "bb"))
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record_session(
            session_id=session, network="devnet", chain_id=1, escrow="0x" + "cc" * 20, requestor="0x" + "dd" * 20,
            token="0x" + "00" * 20, budget=10**18, deadline=2**40, run_id=run_id,
        )  # fmt: skip
        first = _graph(ledger, session, 1, "In [10]", 7, a)
        _graph(ledger, session, 2, "In [2]", 5, b)
        third = _graph(ledger, session, 3, "In [10]", 11, b)
        _graph(ledger, session, 4, None, 2, a)
        abandoned = _graph(ledger, session, 5, "In [2]", 1000, a)
        ledger.update_graph(first, status="confirmed", tx_hash="0x" + "01" * 32)
        ledger.update_graph(abandoned, status="abandoned", error="gone")
        bills = bill(ledger, run_id)
        assert bill(ledger, "0x" + "99" * 32) == []

    assert [b.cell for b in bills] == ["In [2]", "In [10]", "outside cells"]
    two, ten, outside = bills
    assert two.amount == 5  # the abandoned graph is listed, not charged
    assert (ten.amount, ten.providers, ten.compute_seconds, ten.execution_count) == (18, {a, b}, 3.0, 10)
    assert outside.execution_count is None and outside.amount == 2
    table = bill_table(bills, run_id)
    assert "0x" + "01" * 32 in table  # confirmed: the hash alone
    assert "no transaction (pending)" in table and "(abandoned)" in table
    total = next(line for line in table.splitlines() if line.strip().startswith("total"))
    assert total.split()[1:3] == ["5", "2"]  # graphs, providers
    assert total.split()[4:7] == ["25", "wei", "25"]  # short, then exactly in the "wei" column
    assert ten.graphs[0].graph_id == first and ten.graphs[1].graph_id == third


def test_the_bill_shows_the_exact_wei_beside_the_short_amount(tmp_path):
    run_id = "0x" + "11" * 32
    session = "0x" + "22" * 32
    a, b = (to_checksum_address("0x" + c * 20) for c in ("aa", "bb"))
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record_session(
            session_id=session, network="devnet", chain_id=1, escrow="0x" + "cc" * 20, requestor="0x" + "dd" * 20,
            token="0x" + "00" * 20, budget=10**20, deadline=2**40, run_id=run_id,
        )  # fmt: skip
        _graph(ledger, session, 1, "In [1]", 12_345_678_901_234_567_890, a)
        _graph(ledger, session, 2, "In [2]", 25_804, b)
        table = bill_table(bill(ledger, run_id), run_id)
    lines = table.splitlines()
    assert lines[1].split() == ["cell", "graphs", "providers", "compute-s", "amount", "wei", "transaction"]
    one, two, total = (next(x for x in lines if x.strip().startswith(c)) for c in ("In [1]", "In [2]", "total"))
    assert one.split()[5:8] == ["12.35", "ETH", "12345678901234567890"]
    assert two.split()[5:8] == ["0.0000258", "gwei", "25804"]
    assert total.split()[4:7] == ["12.35", "ETH", "12345678901234593694"]
    # The exact column lines up under its header.
    end = lines[1].index(" wei ") + len(" wei")
    assert all(line[end - 1] != " " and line[end : end + 1] in ("", " ") for line in (one, two, total))


def test_golem_ledger_shows_the_exact_wei(tmp_path, monkeypatch, capsys):
    import argparse

    from golem_jupyter.cli import _ledger

    monkeypatch.setenv("GOLEM_HOME", str(tmp_path))
    run_id = "0x" + "11" * 32
    session = "0x" + "22" * 32
    a = to_checksum_address("0x" + "aa" * 20)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.record_run(run_id=run_id, notebook="nb.ipynb", output="out.ipynb", kernel="python3", parameters={})
        ledger.record_session(
            session_id=session, network="devnet", chain_id=1, escrow="0x" + "cc" * 20, requestor="0x" + "dd" * 20,
            token="0x" + "00" * 20, budget=10**20, deadline=2**40, run_id=run_id,
        )  # fmt: skip
        _graph(ledger, session, 1, "In [1]", 12_345_678_901_234_567_890, a)
    spent = 12_345_678_901_234_567_890
    assert _ledger(argparse.Namespace(what="runs", limit=5)) == 0
    out = capsys.readouterr().out
    assert f" 12.35 ETH {spent} wei 1 session(s) " in " ".join(out.split()) and "nb.ipynb" in out
    assert _ledger(argparse.Namespace(what="sessions", limit=5)) == 0
    out = capsys.readouterr().out
    assert f"spent 12.35 ETH ({spent} wei) of 100 ETH ({10**20} wei)" in out


def test_an_empty_bill_says_so():
    assert "nothing ran on the market" in bill_table([], "0x" + "11" * 32)
    assert CellBill("In [1]", ()).amount == 0
