"""Starting and stopping the ``dask worker`` process that serves one agreement.

:func:`run_worker` runs the worker a :class:`WorkerSpec` describes in the sandbox it names
(:mod:`.sandbox`): with ``"bwrap"`` (the default), inside bubblewrap and its own control group,
next to the relay that is its only way to the network, the agent writing its meter file and
its log; with ``"none"``, as a plain child process of the agent, which the operator chose
explicitly. A ``"bwrap"`` worker on a machine without bubblewrap is not started: the agreement
ends saying why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from .._environment import is_secret_name
from ..errors import GolemError
from ..worker.meter import METER_ENV
from .sandbox import (
    DEFAULT_PIDS,
    ROOT,
    SANDBOX_TIERS,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    default_sandbox,
    exit_code,
    meter_line,
)

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
DEATH_TIMEOUT = "3s"
"""How long a worker keeps trying to reach a scheduler that went away before it exits."""
LOG_LIMIT = 16 << 20
"""Bytes of a sandboxed worker's output kept in ``worker.log``; the rest is dropped (it is the
requestor's code that prints, and the provider's disk it would fill)."""
METER_LINE_LIMIT = 4096
METER_READ_INTERVAL = 0.05
"""Seconds between two reads of the meter's pipe (it writes at most every 0.2 s)."""
USAGE_INTERVAL = 1.0
"""How often the sandbox's CPU use (cgroup accounting) is written to the meter file, idle or not."""
REFUSED = 126
"""The exit code reported for a worker that was never started (its sandbox is unavailable)."""
SANDBOX_GRACE = 2.0


@dataclass(frozen=True)
class WorkerSpec:
    """One agreement's worker: whom it serves, with what, and in which sandbox."""

    scheduler: str
    name: str
    directory: Path
    nthreads: int
    gpus: int
    memory_limit: int | None
    sandbox: str = "bwrap"
    pids: int = DEFAULT_PIDS
    scratch_bytes: int | None = None
    lie_fraction: float | None = None
    """DEVNET ONLY (``golem devnet --liars``): the worker returns wrong results for this fraction
    of its tasks (:mod:`golem_jupyter.worker._liar`). None, always, for a real provider."""


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: its exit code (negative: killed by that signal) and why, in words."""

    code: int
    reason: str

    def __str__(self) -> str:
        return self.reason


def worker_command(
    *,
    scheduler: str,
    name: str,
    directory: Path,
    nthreads: int,
    gpus: int,
    memory_limit: int | None,
    contact: str | None = None,
    lie_fraction: float | None = None,
) -> list[str]:
    """The command line of a worker that joins ``scheduler`` with this agreement's certificate.

    ``contact``: the address the sandbox's relay receives connections for this worker at; the
    worker then speaks ``tls://`` through the relay (its first preload installs that).
    ``lie_fraction``: DEVNET ONLY, a lying worker (:mod:`golem_jupyter.worker._liar`, loaded
    before the meter so that the meter's digests are of the lies).
    """
    command = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        scheduler,
        "--name",
        name,
        "--nthreads",
        str(nthreads),
        "--no-nanny",
        "--no-dashboard",
    ]
    if contact is None:
        command += ["--host", "127.0.0.1" if scheduler.startswith("tls://127.") else "0.0.0.0"]
    else:
        command += ["--listen-address", contact, "--contact-address", contact]
        command += ["--preload", "golem_jupyter.worker._sandbox_comm"]
    command += [
        "--tls-ca-file",
        str(directory / "ca.pem"),
        "--tls-cert",
        str(directory / "worker.pem"),
        "--tls-key",
        str(directory / "worker.key"),
    ]
    if lie_fraction is not None:
        command += ["--preload", "golem_jupyter.worker._liar"]
    command += [
        "--preload",
        "golem_jupyter.worker.meter",
        "--local-directory",
        str(directory / "scratch"),
        "--death-timeout",
        DEATH_TIMEOUT,
    ]
    if gpus:
        command += ["--resources", f"GPU={gpus}"]
    if memory_limit:
        command += ["--memory-limit", str(memory_limit)]
    if lie_fraction is not None:  # the liar's own option (the worker hands what it does not know to the preload)
        from ..worker._liar import OPTION

        command += [OPTION, repr(float(lie_fraction))]
    return command


async def run_worker(worker: WorkerSpec, *, task_status=trio.TASK_STATUS_IGNORED) -> WorkerExit:
    """Run the worker until it exits or this task is cancelled; returns how it ended.

    Cancelling stops it and everything it started: SIGTERM first (the worker closes cleanly,
    its meter writes its last totals), SIGKILL if it has not exited after ``STOP_TIMEOUT``
    seconds.
    """
    if worker.sandbox not in SANDBOX_TIERS:
        task_status.started(None)
        return WorkerExit(REFUSED, f"refused to start the worker: unknown sandbox {worker.sandbox!r}")
    if worker.sandbox == "none":
        code = await _run_unconfined(worker, task_status)
        return WorkerExit(code, f"worker exited with code {code}")
    return await _run_sandboxed(worker, task_status)


# ---------------------------------------------------------------------------- sandbox "none"


async def _run_unconfined(worker: WorkerSpec, task_status) -> int:
    command = worker_command(
        scheduler=worker.scheduler,
        name=worker.name,
        directory=worker.directory,
        nthreads=worker.nthreads,
        gpus=worker.gpus,
        memory_limit=worker.memory_limit,
        lie_fraction=worker.lie_fraction,
    )
    # Unconfined, but not handed the agent's secrets (the operator chose no sandbox, not that).
    env = {name: value for name, value in os.environ.items() if not is_secret_name(name)}
    env.update({METER_ENV: str(worker.directory / "meter.json"), "PYTHONUNBUFFERED": "1"})
    with open(worker.directory / "worker.log", "ab") as log:
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
        task_status.started(process)
        try:
            return await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                await stop_process_group(process)


async def stop_process_group(process: trio.Process) -> None:
    if process.returncode is not None:
        return
    _signal_group(process.pid, signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT):
        await process.wait()
        return
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------- sandbox "bwrap"


async def _run_sandboxed(worker: WorkerSpec, task_status) -> WorkerExit:
    memory = worker.memory_limit or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    pids = max(worker.pids, 64 + 4 * worker.nthreads)  # a worker's own threads, and its BLAS pools, fit
    limits = SandboxLimits(memory, worker.nthreads, pids, worker.scratch_bytes)
    try:
        sandbox = await trio.to_thread.run_sync(
            partial(Sandbox.create, worker.directory, scheduler=worker.scheduler, limits=limits, gpus=worker.gpus)
        )
    except SandboxUnavailable as error:
        reason = f"refused to start the worker without its sandbox: {error}"
    except (GolemError, OSError) as error:  # a cgroup it may not create, no descriptors left...
        reason = f"could not prepare the worker's sandbox: {error}"
    else:
        reason = ""
    if reason:
        logger.error("Agreement %s: %s", worker.directory.name, reason)
        with contextlib.suppress(OSError), open(worker.directory / "worker.log", "a") as log:
            log.write(reason + "\n")
        task_status.started(None)
        return WorkerExit(REFUSED, reason)
    inner = worker_command(
        scheduler=worker.scheduler,
        name=worker.name,
        directory=ROOT,
        nthreads=worker.nthreads,
        gpus=worker.gpus,
        memory_limit=memory,
        contact=f"tls://{sandbox.contact}",
        lie_fraction=worker.lie_fraction,
    )
    log_read, log_write = os.pipe()
    meter = _MeterFile(worker.directory / "meter.json", sandbox)
    relay = process = None
    try:
        try:
            # Both are spawned from this (trio's) thread: the kernel sends a parent-death signal when
            # the *thread* that forked exits, and trio.lowlevel.open_process forks in a worker thread
            # that exits when idle, which would SIGKILL the sandbox ten seconds later.
            relay = _Child.spawn(
                sandbox.relay_command(), pass_fds=sandbox.relay_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            process = _Child.spawn(
                sandbox.command(inner),
                pass_fds=sandbox.worker_fds,
                stdin=subprocess.DEVNULL,
                stdout=log_write,
                stderr=log_write,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                start_new_session=True,
            )
        except OSError as error:  # out of descriptors or processes: this agreement fails, the agent goes on
            reason = f"could not start the worker: {error}"
            logger.error("Agreement %s: %s", worker.directory.name, reason)
            task_status.started(None)
            return WorkerExit(REFUSED, reason)
        os.close(log_write)
        log_write = -1
        sandbox.close_inherited()
        task_status.started(process)
        # The readers outlive a cancellation of this task (the agreement ended): the worker's last
        # words, its meter's final totals above all, come after it was told to stop.
        readers = [trio.CancelScope(shield=True), trio.CancelScope(shield=True)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_within, readers[0], partial(_copy_log, log_read, worker.directory / "worker.log"))
            log_read = -1
            nursery.start_soon(_within, readers[1], meter.follow)
            try:
                code = exit_code(await process.wait())
            finally:
                with trio.CancelScope(shield=True):
                    await _stop_sandbox(sandbox, process)
                    with trio.move_on_after(SANDBOX_GRACE):  # until the pipes' last bytes are read
                        await meter.closed.wait()
                    for scope in readers:
                        scope.cancel()
        reason = sandbox.exit_reason(code)
        if sandbox.out_of_memory():
            logger.warning("Agreement %s: %s", worker.directory.name, reason)
        return WorkerExit(code, reason)
    finally:
        with trio.CancelScope(shield=True):
            if relay is not None:
                await relay.stop()
            if process is not None:
                process.close()
            meter.write()
            for fd in (log_read, log_write):
                if fd >= 0:
                    os.close(fd)
            await trio.to_thread.run_sync(sandbox.close)


async def _stop_sandbox(sandbox: Sandbox, process: _Child) -> None:
    if process.returncode is None:
        sandbox.terminate(spare=process.pid)
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)  # bubblewrap's death SIGKILLs the sandbox
            await process.wait()
    await trio.to_thread.run_sync(sandbox.cgroup.kill_all)  # what a fork bomb left behind


async def _within(scope: trio.CancelScope, function) -> None:
    with scope:
        await function()


class _Child:
    """A process spawned from the calling (trio) thread, waited for through a pidfd."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)

    @classmethod
    def spawn(cls, command: list[str], **options) -> _Child:
        return cls(subprocess.Popen(command, **options))

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        while self.popen.poll() is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self.popen.returncode

    async def stop(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            with trio.move_on_after(STOP_TIMEOUT):
                await self.wait()
            if self.returncode is None:
                self.popen.kill()
                await self.wait()
        self.close()

    def close(self) -> None:
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


async def _copy_log(fd: int, path: Path, limit: int = LOG_LIMIT) -> None:
    """Append what the sandbox prints to ``path``, up to ``limit`` bytes; drain and drop the rest."""
    written = 0
    async with trio.lowlevel.FdStream(fd) as stream:
        with open(path, "ab") as log:
            while chunk := await stream.receive_some(65536):
                if written < limit:
                    kept = chunk[: limit - written]
                    log.write(kept)
                    written += len(kept)
                    if written >= limit:
                        log.write(f"\n[golem] the worker printed over {limit} bytes; the rest is dropped\n".encode())
                    log.flush()


class _MeterFile:
    """The agreement's ``meter.json``, written by the agent: the worker meter's last well-formed
    line from its pipe, plus the sandbox's CPU time and memory peak from its control group."""

    def __init__(self, path: Path, sandbox: Sandbox) -> None:
        self.path = path
        self.sandbox = sandbox
        self.totals = {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "tasks": 0, "executing": 0, "last_change": 0.0}
        self.closed = trio.Event()
        self._written: dict | None = None

    async def follow(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_usage)
            try:
                await self._read_pipe()
            finally:
                self.closed.set()
                nursery.cancel_scope.cancel()

    async def _read_pipe(self) -> None:
        fd, self.sandbox.meter_read = self.sandbox.meter_read, -1
        buffer = b""
        async with trio.lowlevel.FdStream(fd) as stream:
            while chunk := await stream.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > METER_LINE_LIMIT:
                    buffer = b""  # no meter line is this long: drop it
                # Only the newest line is read: totals are cumulative, and a task that floods the
                # pipe with junk must not turn the agent's one thread into its parser.
                if lines and len(lines[-1]) <= METER_LINE_LIMIT and (totals := meter_line(lines[-1])) is not None:
                    self.totals = totals
                    self.write()
                await trio.sleep(METER_READ_INTERVAL)  # a flood fills the pipe; the meter's writes then drop

    async def _refresh_usage(self) -> None:
        while True:
            await trio.sleep(USAGE_INTERVAL)
            self.write()

    def write(self) -> None:
        data = {**self.totals, **self.sandbox.usage()}
        if data == self._written:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
            self._written = data


__all__ = ["WorkerExit", "WorkerSpec", "default_sandbox", "run_worker", "stop_process_group", "worker_command"]
