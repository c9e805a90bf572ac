"""``golem run NOTEBOOK``: execute a whole notebook, its ``%%golem`` cells on the market, and bill it.

Built on papermill: the ``parameters`` cell and the injected parameters, per-cell status and
timing in ``metadata.papermill``, and the executed notebook written as each cell finishes.
On top of that:

* the market: with no ``--network``, an embedded devnet with provider agents is started for the
  run and stopped after it. The kernel finds it through ``$GOLEM_NETWORK``.
* the kernel (the Golem kernel unless the notebook or ``--kernel`` names another) loads the
  extension, shows plain text rather than widgets, and labels every graph with the cell that
  submitted it. Before the kernel stops, its sessions are closed, so every graph is settled.
* the bill: the ledger's graphs of this run, added up per cell, printed as a table and kept in
  each cell's ``metadata.golem``.
* the outcome: one exit code per kind of failure (:class:`ExitCode`), the error at the top of
  the output notebook, and a row in the ledger's ``runs`` table.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from queue import Empty
from typing import Any

from .errors import ConfigurationError, GolemError, NetworkUnreachable
from .ledger import GraphRecord, Ledger

DEFAULT_KERNEL = "golem-python"
KERNEL_START_SECONDS = 60
CLOSE_SECONDS = 180.0
"""How long closing the kernel's sessions (settling every graph on-chain) may take."""
IOPUB_SECONDS = 30.0
"""How long an interrupted cell may take to finish: a cancelled graph is settled before it returns."""
ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill removes these cells when it runs the output again
ERROR_ANCHOR = "golem-run-error"
CELL_LABEL = re.compile(r"^In \[(\d+)\]$")

Out = Callable[[str], None]


class ExitCode(IntEnum):
    """What ``golem run`` exits with."""

    OK = 0
    CELL_ERROR = 1
    USAGE = 2
    BUDGET_EXCEEDED = 3
    NETWORK_UNREACHABLE = 4
    KERNEL_DIED = 5
    TIMEOUT = 6
    INTERRUPTED = 130


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "every cell ran",
    ExitCode.CELL_ERROR: "a cell raised an error",
    ExitCode.USAGE: "bad arguments, notebook, parameters, kernel or network; or the market could not start",
    ExitCode.BUDGET_EXCEEDED: "the budget was spent (BudgetExceeded)",
    ExitCode.NETWORK_UNREACHABLE: "the chain's JSON-RPC endpoint did not answer",
    ExitCode.KERNEL_DIED: "the kernel died or did not start",
    ExitCode.TIMEOUT: "a cell ran longer than --timeout and was interrupted",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}
ERROR_NAMES = {
    "BudgetExceeded": ExitCode.BUDGET_EXCEEDED,
    "NetworkUnreachable": ExitCode.NETWORK_UNREACHABLE,
    "CellTimeoutError": ExitCode.TIMEOUT,
}
"""Errors raised in a cell that have an exit code of their own; any other is CELL_ERROR."""


def exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {int(code):<4} {text}" for code, text in EXIT_CODE_MEANINGS.items())


@dataclass(frozen=True)
class RunOptions:
    """What ``golem run`` was asked to do."""

    notebook: Path
    output: Path | None = None
    """Default: ``NAME.out.ipynb`` in the current directory."""
    parameters: dict[str, Any] = field(default_factory=dict)
    network: str | None = None
    """A JSON-RPC URL or connection file; None starts an embedded devnet for the run."""
    budget: int | None = None
    """The most the notebook's sessions may spend together, in wei."""
    verify: float | None = None
    """The fraction of tasks checked in the notebook's sessions (``%golem connect --verify``'s default)."""
    kernel: str | None = None
    timeout: float | None = None
    """Per cell, in seconds."""
    cwd: Path | None = None
    """The kernel's working directory; default the notebook's directory."""
    providers: int = 2
    gpu_providers: int = 0


@dataclass(frozen=True)
class Failure:
    """Why a run stopped early."""

    code: ExitCode
    message: str
    cell_index: int | None = None
    """Position of the failing cell in the executed notebook."""


@dataclass(frozen=True)
class CellBill:
    """What one cell's graphs cost."""

    cell: str
    """``In [N]``, or the session's label for graphs submitted outside any cell."""
    graphs: tuple[GraphRecord, ...]

    @property
    def amount(self) -> int:
        return sum(g.total for g in self.graphs if g.status != "abandoned")

    @property
    def providers(self) -> set[str]:
        return {p.provider for g in self.graphs for p in g.payouts}

    @property
    def compute_seconds(self) -> float:
        return sum(p.cpu_seconds + p.gpu_seconds for g in self.graphs for p in g.payouts)

    @property
    def execution_count(self) -> int | None:
        match = CELL_LABEL.match(self.cell)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    output: Path
    failure: Failure | None
    bills: tuple[CellBill, ...]

    @property
    def exit_code(self) -> ExitCode:
        return self.failure.code if self.failure else ExitCode.OK

    @property
    def total(self) -> int:
        return sum(b.amount for b in self.bills)


def run_notebook(options: RunOptions, *, out: Out = print, ledger: Ledger | None = None) -> RunOutcome:
    """Execute ``options.notebook``, write the executed notebook, print and return the bill.

    Bad arguments raise :class:`ConfigurationError` before anything starts. Once the run is
    recorded, every failure is reported in the outcome instead: the output notebook is written
    and the run finished in the ledger whatever happens.
    """
    from papermill.iorw import write_ipynb

    notebook = options.notebook.expanduser().resolve()
    output = (options.output or Path.cwd() / f"{notebook.stem}.out.ipynb").expanduser().resolve()
    nb = _load(notebook)
    kernel = _kernel_name(options.kernel, nb)
    nb = _parameterize(nb, notebook, output, options.parameters, kernel, out)
    cwd = (options.cwd or notebook.parent).expanduser().resolve()
    if not cwd.is_dir():
        raise ConfigurationError(f"--cwd {cwd} is not a directory.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"Cannot write the output notebook in {output.parent}: {error.strerror}.") from None
    ledger = ledger or Ledger()
    run_id = "0x" + os.urandom(32).hex()
    ledger.record_run(
        run_id=run_id,
        notebook=str(notebook),
        output=str(output),
        kernel=kernel,
        parameters=options.parameters,
        network=options.network,
        budget=options.budget,
    )
    failure: Failure | None = None
    work = Path(tempfile.mkdtemp(prefix="golem-run-"))
    try:
        try:
            with _market(options, work, out) as network:
                env = _kernel_environment(network, run_id, notebook, options.budget, options.verify)
                out(f"Running {notebook.name} on kernel {kernel} ({_count_code(nb)} code cells)")
                failure = _execute(nb, kernel, output, env, cwd, options.timeout, work / "kernel.log", out)
        except NetworkUnreachable as error:
            failure = Failure(ExitCode.NETWORK_UNREACHABLE, str(error))
        except GolemError as error:
            failure = Failure(ExitCode.USAGE, str(error))
        except KeyboardInterrupt:
            failure = Failure(ExitCode.INTERRUPTED, "interrupted (Ctrl-C)")
    finally:
        bills = tuple(bill(ledger, run_id))
        outcome = RunOutcome(run_id, output, failure, bills)
        _annotate(nb, outcome, options.network)
        write_ipynb(nb, str(output))
        status = "succeeded" if failure is None else "interrupted" if failure.code == ExitCode.INTERRUPTED else "failed"
        ledger.finish_run(
            run_id, status=status, exit_code=int(outcome.exit_code), error=failure.message if failure else None
        )
        shutil.rmtree(work, ignore_errors=True)
    out(bill_table(bills, run_id))
    out(f"Wrote {output}")
    if failure is not None:
        out(f"golem run: {failure.message} (exit code {int(failure.code)}: {EXIT_CODE_MEANINGS[failure.code]})")
    return outcome


# ---------------------------------------------------------------------- the notebook


def _load(path: Path) -> Any:
    import nbformat
    from papermill.iorw import load_notebook_node

    if not path.is_file():
        raise ConfigurationError(f"No notebook at {path}.")
    try:
        nb = load_notebook_node(str(path))
        nbformat.validate(nb)
    except (ValueError, nbformat.ValidationError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigurationError(f"{path} is not a valid notebook: {first_line}") from None
    return nb


def _kernel_name(requested: str | None, nb: Any) -> str:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = requested or nb.metadata.get("kernelspec", {}).get("name") or DEFAULT_KERNEL
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(KernelSpecManager().find_kernel_specs()))
        raise ConfigurationError(f"No kernel named {name!r} is installed (there are: {known}).") from None
    return name


def _parameterize(nb: Any, notebook: Path, output: Path, parameters: dict[str, Any], kernel: str, out: Out) -> Any:
    from papermill.execute import prepare_notebook_metadata, remove_error_markers
    from papermill.inspection import inspect_notebook
    from papermill.parameterize import parameterize_notebook

    if parameters:
        known = inspect_notebook(str(notebook))
        if unknown := sorted(set(parameters) - set(known)):
            where = "its parameters cell sets " + ", ".join(known) if known else "it has no cell tagged 'parameters'"
            out(f"golem run: warning: the notebook does not define {', '.join(unknown)} ({where}).")
        nb = parameterize_notebook(nb, parameters, kernel_name=kernel)
    nb = prepare_notebook_metadata(nb, str(notebook), str(output))
    return remove_error_markers(nb)


def _count_code(nb: Any) -> int:
    return sum(cell.cell_type == "code" for cell in nb.cells)


# ---------------------------------------------------------------------- the market and the kernel


@contextmanager
def _market(options: RunOptions, work: Path, out: Out) -> Iterator[str]:
    """The network the kernel uses: the one given (checked first), or an embedded devnet for this run."""
    from .chain.network import connect, resolve
    from .devnet import Devnet

    if options.network is not None:
        connect(resolve(options.network))  # unreachable, wrong chain or no contracts: said now, not in a cell
        yield options.network
        return
    connection_file = work / "devnet.json"
    what = f"{options.providers} provider(s)"
    if options.gpu_providers:
        what += f", {options.gpu_providers} with a GPU"
    out(f"Starting an embedded market: a local chain and {what}")
    devnet = Devnet(
        port=0, providers=options.providers, gpu_providers=options.gpu_providers, connection_file=connection_file
    )
    try:
        network = devnet.start()
        out(f"Market ready: chain {network.chain_id} at {network.rpc_url}")
        yield str(connection_file)
    finally:
        devnet.stop()
        out("Market stopped")


def _kernel_environment(
    network: str, run_id: str, notebook: Path, budget: int | None, verify: float | None = None
) -> dict[str, str]:
    from .chain.network import NETWORK_ENV
    from .notebook.magics import BUDGET_ENV, VERIFY_ENV
    from .requestor.cluster import RUN_ID_ENV

    env = dict(os.environ)
    env.update({NETWORK_ENV: network, RUN_ID_ENV: run_id, "GOLEM_DISPLAY": "text", "JPY_SESSION_NAME": str(notebook)})
    if budget is not None:
        env[BUDGET_ENV] = f"{budget}wei"
    else:
        env.pop(BUDGET_ENV, None)
    if verify is not None:
        env[VERIFY_ENV] = repr(float(verify))
    else:
        env.pop(VERIFY_ENV, None)
    return env


def _execute(
    nb: Any,
    kernel: str,
    output: Path,
    env: dict[str, str],
    cwd: Path,
    timeout: float | None,
    log: Path,
    out: Out,
) -> Failure | None:
    """Run the cells in a new kernel (papermill's execution manager and client); the failure, if any.

    The kernel's own stdout and stderr (not the cells' outputs) go to ``log``; its tail is shown
    if the kernel dies.
    """
    from papermill.engines import NotebookExecutionManager

    manager = NotebookExecutionManager(nb, output_path=str(output), progress_bar=False)
    manager.notebook_start()
    client = _client_class()(
        manager,
        kernel_name=kernel,
        timeout=math.ceil(timeout) if timeout else None,
        startup_timeout=KERNEL_START_SECONDS,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"The cell ran longer than --timeout {timeout:g} s and was interrupted." if timeout else "",
            "traceback": [],
        },
        iopub_timeout=IOPUB_SECONDS,
        config=_kernel_manager_config(),
    )
    client.report = out
    with open(log, "wb") as kernel_output:
        try:
            client.execute(env=env, cwd=str(cwd), stdout=kernel_output, stderr=kernel_output)
        except RuntimeError as error:  # the kernel did not start, or died outside a cell
            client.failure = client.failure or Failure(ExitCode.KERNEL_DIED, f"The kernel died: {error}")
        finally:
            manager.cleanup_pbar()
            manager.notebook_complete()
    if client.failure is not None and client.failure.code == ExitCode.KERNEL_DIED:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        if tail:
            out("The kernel's last words:\n  " + "\n  ".join(tail))
    return client.failure


def _kernel_manager_config() -> Any:
    from traitlets.config import Config

    # A kernel asked to stop closes its sessions first (settling them); give it the time to.
    return Config({"KernelManager": {"shutdown_wait_time": CLOSE_SECONDS}})


def _client_class() -> type:
    """papermill's notebook client, with golem's start, stop and failure handling (imported lazily)."""
    import signal

    from jupyter_core.utils import ensure_async, run_sync
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from papermill.clientwrap import PapermillNotebookClient

    class GolemNotebookClient(PapermillNotebookClient):
        """Runs the cells like papermill; loads the extension first, closes its sessions last, keeps the failure."""

        failure: Failure | None = None
        report: Out = print
        interrupted = False
        closing = False

        @contextmanager
        def setup_kernel(self, **kwargs: Any) -> Iterator[None]:
            """nbclient's, without its SIGINT handler (which stops the kernel): Ctrl-C interrupts the cell."""
            self.km = self.km or self.create_kernel_manager()
            try:
                self.start_new_kernel(**kwargs)
                self.start_new_kernel_client()
                previous = signal.signal(signal.SIGINT, self._interrupt)
                try:
                    yield
                finally:
                    signal.signal(signal.SIGINT, previous)
            finally:
                self._cleanup_kernel()

        def _interrupt(self, signum: int, frame: Any) -> None:
            """First Ctrl-C: interrupt the running cell (a %%golem graph is cancelled and settled),
            then close the sessions and stop. A second one stops at once."""
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            if self.closing:  # interrupting the close would leave graphs unsettled
                self.report("golem run: settling the sessions before stopping; Ctrl-C again to stop at once")
                return
            self.report("golem run: interrupting the kernel; Ctrl-C again to stop at once")
            pid = getattr(self.km.provisioner, "pid", None)
            if pid is not None:
                os.kill(pid, signal.SIGINT)

        def execute(self, **kwargs: Any) -> Any:
            self.reset_execution_trackers()
            with self.setup_kernel(**kwargs):
                self.papermill_execute_cells()
                if self.failure is None or self.failure.code != ExitCode.KERNEL_DIED:
                    info = self.wait_for_reply(self.kc.kernel_info())
                    self.nb.metadata["language_info"] = info["content"]["language_info"]
                self.set_widgets_metadata()
            return self.nb

        def papermill_execute_cells(self) -> None:
            self._quietly(PRELOAD, KERNEL_START_SECONDS)
            try:
                for index, cell in enumerate(self.nb.cells):
                    try:
                        self.nb_man.cell_start(cell, index)
                        self.execute_cell(cell, index)
                    except CellExecutionError as error:
                        code = ExitCode.INTERRUPTED if self.interrupted else ERROR_NAMES.get(error.ename)
                        self._fail(index, code or ExitCode.CELL_ERROR, error.ename, error.evalue)
                        break
                    except CellTimeoutError as error:
                        self._fail(index, ExitCode.TIMEOUT, "CellTimeoutError", str(error).splitlines()[0])
                        break
                    except DeadKernelError:
                        self._fail(index, ExitCode.KERNEL_DIED, "DeadKernelError", "the kernel died in this cell")
                        break
                    finally:
                        self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                        self._report(cell)
                    if self.interrupted:  # between cells
                        self.failure = self.failure or Failure(ExitCode.INTERRUPTED, "interrupted (Ctrl-C)")
                        break
            finally:
                if self.failure is None or self.failure.code != ExitCode.KERNEL_DIED:
                    self.closing = True
                    reply = self._quietly(CLOSE, CLOSE_SECONDS)
                    if reply is None or reply.get("status") != "ok":
                        why = "no answer" if reply is None else f"{reply.get('ename')}: {reply.get('evalue')}"
                        self.report(f"golem run: warning: closing the kernel's sessions failed ({why})")

        def _fail(self, index: int, code: ExitCode, ename: str, evalue: str) -> None:
            self.nb_man.cell_exception(self.nb.cells[index], cell_index=index)
            first_line = (evalue or "").strip().splitlines()[0] if (evalue or "").strip() else ""
            self.failure = Failure(code, f"{ename}: {first_line}" if first_line else ename, index)

        def _report(self, cell: Any) -> None:
            if cell.cell_type != "code" or not cell.source.strip():
                return
            meta = cell.metadata.get("papermill", {})
            status = "failed" if meta.get("exception") else "ok"
            if status == "ok" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                status = "ok (raised, as its raises-exception tag says)"
            label = f"In [{cell.execution_count}]" if cell.execution_count else "In [ ]"
            self.report(f"  {label:>8}  {meta.get('duration', 0.0):7.1f} s  {status}")

        async def _async_quietly(self, code: str, timeout: float) -> dict[str, Any] | None:
            """Run ``code`` without recording it in the notebook; its reply's content, None if none came."""
            msg_id = self.kc.execute(code, silent=True, store_history=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=1))
                except Empty:
                    if not await ensure_async(self.kc.is_alive()):
                        return None
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg["content"]
            return None

        _quietly = run_sync(_async_quietly)

    return GolemNotebookClient


PRELOAD = "get_ipython().extension_manager.load_extension('golem_jupyter')"
"""Run first in any IPython kernel (the Golem kernel has it loaded already): ``%%golem`` and cell labels."""
CLOSE = (
    "get_ipython().run_line_magic('golem', 'close') "
    "if 'golem_jupyter' in get_ipython().extension_manager.loaded else None"
)
"""Run last: settle and end the sessions the notebook opened."""


# ---------------------------------------------------------------------- the bill


def bill(ledger: Ledger, run_id: str) -> list[CellBill]:
    """The graphs of the run's sessions, per cell, in the order of the cells."""
    graphs: list[GraphRecord] = []
    for session in ledger.sessions(limit=10_000, run_id=run_id):
        graphs += ledger.graphs(session.session_id, limit=1_000_000)
    by_cell: dict[str, list[GraphRecord]] = {}
    for graph in sorted(graphs, key=lambda g: g.created_at):
        by_cell.setdefault(graph.label or "outside cells", []).append(graph)
    bills = [CellBill(cell, tuple(found)) for cell, found in by_cell.items()]
    return sorted(bills, key=lambda b: (b.execution_count is None, b.execution_count or 0))


def bill_table(bills: tuple[CellBill, ...] | list[CellBill], run_id: str) -> str:
    """The cost table ``golem run`` prints: one row per cell, a transaction per graph, and the total.

    Amounts short (:func:`~.amounts.format_wei`) in "amount", exactly in "wei"."""
    from .amounts import format_wei

    if not bills:
        return f"Bill for run {run_id[:10]}…: nothing ran on the market."
    header = ("cell", "graphs", "providers", "compute-s", "amount", "wei", "transaction")
    rows: list[tuple[str, ...]] = []
    for b in bills:
        txs = [_tx_text(g) for g in b.graphs]
        seconds = f"{b.compute_seconds:.3f}"
        amount = (format_wei(b.amount), str(b.amount))
        rows.append((b.cell, str(len(b.graphs)), str(len(b.providers)), seconds, *amount, txs[0]))
        rows += [("", "", "", "", "", "", tx) for tx in txs[1:]]
    providers = set().union(*(b.providers for b in bills))
    seconds = sum(b.compute_seconds for b in bills)
    total = sum(b.amount for b in bills)
    n_graphs = sum(len(b.graphs) for b in bills)
    rows.append(("total", str(n_graphs), str(len(providers)), f"{seconds:.3f}", format_wei(total), str(total), ""))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    align = [str.ljust, str.rjust, str.rjust, str.rjust, str.rjust, str.rjust, str.ljust]
    lines = [f"Bill for run {run_id[:10]}…:"]
    for row in (header, *rows):
        cells = [fit(cell, width) for fit, cell, width in zip(align, row, widths, strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    checked = [g.verification for b in bills for g in b.graphs if g.verification]
    if checked:
        counts = {name: sum(v[name] for v in checked) for name in ("checked", "reruns", "mismatches", "cost")}
        lines.append(
            f"  verified: {counts['checked']} task(s) checked, {counts['mismatches']} mismatch(es) refereed; "
            f"the re-runs cost {format_wei(counts['cost'])} ({counts['cost']} wei), in the amounts above"
        )
    return "\n".join(lines)


def _tx_text(graph: GraphRecord) -> str:
    if graph.status == "confirmed":
        return graph.tx_hash or ""
    return f"{graph.tx_hash or 'no transaction'} ({graph.status})"


def _annotate(nb: Any, outcome: RunOutcome, network: str | None) -> None:
    """The bill in the notebook's metadata (amounts as strings: JSON numbers stop at 2**53), the error on top."""
    for b in outcome.bills:
        for cell in nb.cells:
            if b.execution_count is not None and cell.get("execution_count") == b.execution_count:
                cell.metadata["golem"] = _cell_metadata(b)
    failure = outcome.failure
    nb.metadata["golem"] = {
        "run_id": outcome.run_id,
        "network": network or "embedded devnet",
        "exit_code": int(outcome.exit_code),
        "outcome": EXIT_CODE_MEANINGS[outcome.exit_code] if failure is None else failure.message,
        "graphs": sum(len(b.graphs) for b in outcome.bills),
        "total_wei": str(outcome.total),
    }
    if failure is not None:
        _show_failure(nb, failure)


def _cell_metadata(b: CellBill) -> dict[str, Any]:
    return {
        "amount_wei": str(b.amount),
        "compute_seconds": b.compute_seconds,
        "providers": sorted(b.providers),
        "graphs": [
            {
                "graph_id": g.graph_id,
                "session_id": g.session_id,
                "n_tasks": g.n_tasks,
                "amount_wei": str(g.total),
                "status": g.status,
                "tx_hash": g.tx_hash,
            }
            for g in b.graphs
        ],
    }


def _show_failure(nb: Any, failure: Failure) -> None:
    import nbformat

    where = ""
    if failure.cell_index is not None:
        cell = nb.cells[failure.cell_index]
        count = cell.get("execution_count")
        where = f' at <a href="#{ERROR_ANCHOR}">In [{count or " "}]</a>'
        anchor = nbformat.v4.new_markdown_cell(
            f'<span id="{ERROR_ANCHOR}" style="color:red">golem run stopped here: {_escape(failure.message)}</span>'
        )
        anchor.metadata["tags"] = [ERROR_MARKER_TAG]
        nb.cells.insert(failure.cell_index, anchor)
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red; font-size:1.5em">golem run failed{where} '
        f"(exit code {int(failure.code)}: {EXIT_CODE_MEANINGS[failure.code]})</span><br>{_escape(failure.message)}"
    )
    banner.metadata["tags"] = [ERROR_MARKER_TAG]
    nb.cells.insert(0, banner)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# ---------------------------------------------------------------------- parameters


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill reads it: True, False, None, an int, a float, or the text."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_parameters_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) parameters file."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigurationError(f"Cannot read the parameters file {path}: {error.strerror}.") from None
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigurationError(f"{path} must hold a mapping of parameter names to values.")
    return data
