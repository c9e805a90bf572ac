"""The session's scheduler as a :class:`~distributed.deploy.spec.ProcessInterface`.

Like distributed's ``SubprocessScheduler``, it runs the scheduler in a process of its own
(``python -m golem_jupyter.scheduler``), which :class:`~.cluster.GolemCluster` names in its
scheduler spec. It is a process of its own on purpose: the scheduler unpickles the graphs the
requestor's client sends, while the requestor's process decodes provider bytes only through the
restricted decoder (:mod:`golem_jupyter.trust`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO

from distributed.deploy.spec import ProcessInterface

from .._environment import is_secret_name
from ..errors import GolemError

logger = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


_PASSED_ON = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "TERM", "VIRTUAL_ENV", "CONDA_PREFIX")
_PASSED_ON_PREFIXES = ("DASK_", "PYTHON", "LC_", "OMP_", "OPENBLAS_", "MKL_", "LD_LIBRARY_PATH")


def scheduler_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The scheduler's environment: an allowlist of this process's, and never anything secret.

    The scheduler process holds no key (DESIGN.md section 6): no wallet key, no keystore
    password, whatever their variable is called. Vouchers and transactions are signed only in
    the requestor's own process.
    """
    environ = dict(os.environ if environ is None else environ)
    return {
        name: value
        for name, value in environ.items()
        if (name in _PASSED_ON or name.startswith(_PASSED_ON_PREFIXES)) and not is_secret_name(name)
    }


class SchedulerProcess(ProcessInterface):
    """A TLS scheduler (mutual authentication, the session's CA) in a child process.

    ``credentials`` holds the scheduler's certificate and key; ``workdir`` receives the
    scheduler's log and the file it writes its address to. The process exits on its own when
    this process dies, so a killed kernel never leaves a scheduler behind.
    """

    def __init__(self, *, credentials: Path, workdir: Path, host: str = "127.0.0.1", dashboard: bool = False) -> None:
        super().__init__()
        self.credentials = credentials
        self.workdir = workdir
        self.host = host
        self.dashboard = dashboard
        self.process: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "scheduler.log"

    async def start(self) -> None:
        scheduler_file = self.workdir / "scheduler.json"
        command = [
            sys.executable,
            "-m",
            "golem_jupyter.scheduler",
            "--credentials",
            str(self.credentials),
            "--scheduler-file",
            str(scheduler_file),
            "--host",
            self.host,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.dashboard:
            command.append("--dashboard")
        self._log_file = open(self.log_path, "ab")  # closed in close()
        self.process = await asyncio.create_subprocess_exec(
            *command,
            stdout=self._log_file,
            stderr=self._log_file,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=scheduler_environment(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise GolemError(f"The session's scheduler did not start; its log is {self.log_path}.")
            await asyncio.sleep(0.05)
        self.address = json.loads(scheduler_file.read_text())["address"]
        await super().start()

    async def close(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        await super().close()
