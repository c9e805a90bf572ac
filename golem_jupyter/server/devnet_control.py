"""Starting and stopping the local market from the server, for the side panel's buttons.

A devnet started here is ``golem devnet --port 0 --providers N`` run as a child process in its
own session, so that a Ctrl-C meant for Jupyter does not stop it half-way; its output goes to
``$GOLEM_HOME/devnet-jupyter.log``. It is stopped when the server process exits (an atexit hook:
Jupyter exits normally on Ctrl-C and on SIGTERM), by SIGTERM, which lets it stop its provider
agents and remove its connection files. A devnet started elsewhere is only looked at, and
stopped on request like ``golem devnet stop`` does.

The waits are asyncio sleeps and the blocking calls run in a thread: the server's loop keeps
answering while a devnet starts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from ..chain.network import Network
from ..devnet import DevnetProvider, running_devnet, running_providers, stop_devnet
from ..errors import ConfigurationError, GolemError
from ..home import golem_home
from . import views

START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.2
LOG_NAME = "devnet-jupyter.log"
LOG_TAIL = 2000
"""Characters of the log an error about a failed start carries."""


class DevnetConflict(GolemError):
    """The devnet is not in a state that allows the action (one already runs, none runs)."""


class DevnetFailed(GolemError):
    """The devnet did not start; the message carries the end of its log."""


class DevnetControl:
    """The devnet of one Jupyter server: what runs, and the one this server started, if any."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = asyncio.Lock()  # one start or stop at a time

    # -- looking

    def view(self) -> dict[str, Any]:
        """The devnet document (blocking: it reads the connection files)."""
        network, providers = self._running()
        return views.devnet_view(network, providers, started_here=self._started(network))

    def _running(self) -> tuple[Network | None, list[DevnetProvider]]:
        self._reap()
        try:
            network = running_devnet()
            return (network, running_providers()) if network is not None else (None, [])
        except (ConfigurationError, OSError, ValueError, TypeError, KeyError):  # a damaged file: nothing usable runs
            return None, []

    def _started(self, network: Network | None) -> bool:
        return network is not None and self._process is not None and network.pid == self._process.pid

    def _reap(self) -> None:
        # A child that exited on its own (`golem devnet stop` from a terminal, a crash) stays a zombie, and
        # looks alive to running_devnet(), until it is waited for.
        if self._process is not None and self._process.poll() is not None:
            self._forget()

    # -- starting

    async def start(self, providers: int) -> dict[str, Any]:
        """Start a devnet with ``providers`` agents and wait until all of them have published their offers."""
        async with self._lock:
            network, _ = await asyncio.to_thread(self._running)
            if network is not None:
                raise DevnetConflict(
                    f"A devnet is already running at {network.rpc_url} (pid {network.pid}); use it, or stop it first."
                )
            process = await asyncio.to_thread(self._spawn, providers)
            try:
                await self._wait_until_ready(process, providers)
            except BaseException:
                await asyncio.to_thread(self._terminate, process)
                raise
            return await asyncio.to_thread(self.view)

    def _spawn(self, providers: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "golem_jupyter.cli", "devnet", "--port", "0", "--providers", str(providers)]
        with open(golem_home() / LOG_NAME, "wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the log is read while it runs
            )
        self._process = process
        atexit.register(self.shutdown)
        return process

    async def _wait_until_ready(self, process: subprocess.Popen, providers: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise DevnetFailed(f"The devnet exited with code {process.returncode} while starting. {self._tail()}")
            network, agents = await asyncio.to_thread(self._running)
            if network is not None and network.pid == process.pid and len(agents) == providers:
                return
            if time.monotonic() > deadline:
                raise DevnetFailed(f"The devnet did not start within {START_TIMEOUT:.0f} s. {self._tail()}")
            await asyncio.sleep(POLL_INTERVAL)

    def _tail(self) -> str:
        path = golem_home() / LOG_NAME
        try:
            text = without_tracebacks(path.read_text(errors="replace"))[-LOG_TAIL:].strip()
        except OSError:
            text = ""
        return f"The end of its log ({path}):\n{text}" if text else f"Its log ({path}) is empty."

    # -- stopping

    async def stop(self) -> dict[str, Any]:
        """Stop the running devnet, wherever it was started, and wait until it has stopped."""
        async with self._lock:
            network, _ = await asyncio.to_thread(self._running)
            if network is None:
                raise DevnetConflict("No devnet is running; there is nothing to stop.")
            if network.pid == os.getpid():
                raise DevnetConflict(
                    "The running devnet lives inside this Jupyter server's own process; stop it from the code "
                    "that started it."
                )
            await asyncio.to_thread(stop_devnet)
            if self._started(network):
                await asyncio.to_thread(self._terminate, self._process)
            return await asyncio.to_thread(self.view)

    def shutdown(self) -> None:
        """Stop the devnet this server started, if it still runs (blocking; the atexit hook)."""
        if self._process is not None:
            self._terminate(self._process)

    def _terminate(self, process: subprocess.Popen) -> None:
        """SIGTERM, so that it stops its agents; SIGKILL to it and to them if it does not stop in time."""
        network, agents = self._running()
        # Read while the devnet still lists them: if it has to be killed, its agents (in sessions of their
        # own) would outlive it.
        orphans = [agent.pid for agent in agents] if network is not None and network.pid == process.pid else []
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in (process.pid, *orphans):  # each runs in its own session, leading its own group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            process.wait()
        if process is self._process:
            self._forget()

    def _forget(self) -> None:
        self._process = None
        atexit.unregister(self.shutdown)


def without_tracebacks(text: str) -> str:
    """``text`` with each Python traceback cut down to its last line, the exception: the frames say
    nothing the person at the side panel can act on, and the log file keeps them."""
    kept: list[str] = []
    in_traceback = False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif not (in_traceback and line[:1].isspace()):  # frames and their source lines are indented
            in_traceback = False
            kept.append(line)
    return "\n".join(kept)
