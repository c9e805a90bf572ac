"""Starting and stopping the ``dask worker`` process that serves one agreement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from ..worker.meter import METER_ENV

STOP_TIMEOUT = 5.0
DEATH_TIMEOUT = "3s"
"""How long a worker keeps trying to reach a scheduler that went away before it exits."""


def worker_command(
    *, scheduler: str, name: str, directory: Path, nthreads: int, gpus: int, memory_limit: int | None
) -> list[str]:
    """The command line of a worker that joins ``scheduler`` with this agreement's certificate."""
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
        "--host",
        "127.0.0.1" if scheduler.startswith("tls://127.") else "0.0.0.0",
        "--tls-ca-file",
        str(directory / "ca.pem"),
        "--tls-cert",
        str(directory / "worker.pem"),
        "--tls-key",
        str(directory / "worker.key"),
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
    return command


async def run_worker(command: list[str], directory: Path, *, task_status=trio.TASK_STATUS_IGNORED) -> int:
    """Run the worker until it exits or this task is cancelled; returns its exit code.

    It runs in its own process group, so cancelling stops it and anything it started: SIGTERM
    first, SIGKILL if it has not exited after ``STOP_TIMEOUT`` seconds.
    """
    env = {**os.environ, METER_ENV: str(directory / "meter.json"), "PYTHONUNBUFFERED": "1"}
    with open(directory / "worker.log", "ab") as log:
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
