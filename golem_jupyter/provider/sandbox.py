"""The sandbox each agreement's worker runs in (DESIGN.md section 6, "The provider's side").

Tiers (:data:`SANDBOX_TIERS`): ``"bwrap"``, the default, and ``"none"``, which only an operator's
explicit choice selects (``ProviderConfig.sandbox``, or ``GOLEM_SANDBOX=none`` in the agent's
environment). Without bubblewrap and usable cgroups, a ``"bwrap"`` agent refuses to start
workers and says why (:func:`sandbox_unavailable_reason`).

**Namespaces and files.** bubblewrap gives the worker new user, PID, IPC, UTS, cgroup, mount
and network namespaces (``--unshare-all``), no capabilities (``--cap-drop ALL``; the uid inside is
1000), no further user namespaces (``--disable-userns``), a session of its own
(``--new-session``: no TIOCSTI into the agent's terminal), and SIGKILL when the agent dies
(``--die-with-parent``; the agent spawns it from its trio thread, because the kernel ties that
signal to the *thread* that forked, and trio's ``open_process`` forks in a worker thread that
exits when idle). The file system is a read-only root that holds:

* ``/usr`` (and the ``/bin``, ``/lib*`` links) and the Python installation the agent runs
  (``sys.prefix``, ``sys.base_prefix``, the site-packages and golem_jupyter's own directory),
  read-only; generated ``/etc/passwd``, ``/etc/group``, ``/etc/hosts``, and of the host's ``/etc``
  only the dynamic linker's cache and configuration, ``alternatives`` and ``localtime``;
* ``/proc`` of its own PID namespace and a minimal, read-only ``/dev`` (with ``gpus``, the
  ``/dev/nvidia*`` device nodes that exist, and nothing else) whose ``/dev/shm`` is a tmpfs of the
  scratch size;
* ``/golem``: this agreement's ``ca.pem``, ``worker.pem`` and ``worker.key`` (read-only), the
  relay's socket directory ``/golem/run``, and ``/golem/scratch``, the worker's local directory;
* size-limited tmpfs for ``/golem/scratch``, ``/tmp`` and the empty home ``/home/golem``.

Not the agent's home, ``GOLEM_HOME``, its keystore, other agreements, or any process of the host.
The environment is an allowlist (``--clearenv``): ``PATH``, ``HOME``, ``LANG``,
``PYTHONUNBUFFERED``, the thread counts of OpenMP/OpenBLAS/MKL (the agreement's threads), and the
variables of the meter and network channels below; never the agent's ``PYTHONPATH`` (only where
the agent imports golem_jupyter from outside the interpreter's own paths, a ``PYTHONPATH`` naming
golem_jupyter's parent, where the sandbox holds nothing else). Task code reaches workers by value
(cloudpickle), not by importing the requestor's modules.

**Network.** The network namespace has only ``lo``; the one way out is the agent's relay
(:mod:`._relay`), reached over Unix sockets, never over a socket of the host's network namespace
(a host TCP socket, even a listening or connected one, can be dissolved with
``connect(AF_UNSPEC)`` and reconnected from inside to any host service; a Unix socket cannot):

* outbound, the worker's ``tls://`` transport (:mod:`golem_jupyter.worker._sandbox_comm`)
  asks the relay for ``host:port`` over ``/golem/run/connect.sock``; the relay connects only to
  the agreement's scheduler (resolved once) and to addresses that prove, in a TLS handshake, to
  hold a worker certificate of the session's CA: the session's other workers. Not the agent,
  the chain's RPC node, another session's scheduler or workers, or any other service;
* inbound, the relay listens on the worker's contact address (a TCP port of the host, as an
  unsandboxed worker would) and forwards each connection to a Unix socket whose listening end the
  agent created and handed to the worker. The scheduler and the session's peers reach it; worker-
  to-worker transfers work as without a sandbox. TLS stays end to end, worker to peer.

The task has no ``CAP_NET_ADMIN`` over anything but its own empty namespace, so it cannot widen
this; it can only ask the relay, which answers it as it answers the worker.

**Limits, by the kernel** (:mod:`._cgroups`): a control group per agreement caps memory at the
worker's memory limit (no swap; the tmpfs the sandbox writes are charged to it too), CPU at the
agreement's threads (CFS quota = threads x period: background threads get no more than was
rented), and processes (``pids.max``; threads count). Scratch space is a tmpfs of
``SandboxLimits.scratch`` bytes: ``ENOSPC`` past it. A tmpfs, not a loop-mounted image or an XFS
project quota: it needs no privilege beyond the sandbox's own mount namespace, leaves nothing
behind when the sandbox dies, and its pages count against the memory limit, so scratch plus
memory never exceed what the agreement rents; the cost is that it is RAM, not disk. A worker
past its memory limit is killed by the kernel's OOM killer; the agent sees it in the group's
counters and says so (:meth:`Sandbox.exit_reason`).

**Metering.** The provider's meter inside the worker (:mod:`golem_jupyter.worker.meter`)
writes its totals to a pipe the agent reads (``GOLEM_METER_FD``), not to a file of the host:
the agent writes ``meter.json`` in the agreement's directory itself, adding what the task cannot
forge: ``sandbox_cpu_seconds``, the CPU the whole sandbox used (cgroup accounting, background
threads included) and ``sandbox_memory_peak``.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import ipaddress
import json
import logging
import math
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GolemError
from ..worker.meter import METER_FD_ENV
from . import _cgroups
from ._relay import RelayConfig

logger = logging.getLogger(__name__)

SANDBOX_TIERS = ("bwrap", "none")
"""What a provider can run requestor code in: bubblewrap + cgroups, or nothing at all."""
SANDBOX_ENV = "GOLEM_SANDBOX"
"""The agent's default tier when its configuration names none (an operator's setting)."""
ROOT = Path("/golem")
"""Where the agreement's files are inside the sandbox."""
HOME = "/home/golem"
UID = 1000
DEFAULT_PIDS = 256
"""Processes and threads one sandbox may hold (a Dask worker uses about 20)."""
MIN_SCRATCH = 64 << 20
HOME_BYTES = 16 << 20
LISTEN_BACKLOG = 2048
CONNECT_PATH = ROOT / "run" / "connect.sock"
ETC_SHARED = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
"""What of the host's /etc a worker sees (read-only, no secrets): the dynamic linker's cache (a GPU
driver's libraries are often found only through it), the alternatives' links and the time zone."""


class SandboxUnavailable(GolemError):
    """The sandbox a provider chose cannot run on this machine."""


def check_tier(tier: str) -> str:
    if tier not in SANDBOX_TIERS:
        raise GolemError(f"Unknown sandbox {tier!r}: choose one of {', '.join(SANDBOX_TIERS)}.")
    return tier


def default_sandbox() -> str:
    """The tier an agent uses unless told otherwise: ``$GOLEM_SANDBOX``, else ``"bwrap"``."""
    return check_tier(os.environ.get(SANDBOX_ENV) or "bwrap")


def require_sandbox(tier: str) -> None:
    """Raise :class:`SandboxUnavailable`, saying what the operator can do, when ``tier`` cannot run here."""
    if check_tier(tier) == "bwrap" and (reason := sandbox_unavailable_reason()) is not None:
        raise SandboxUnavailable(
            f"This provider cannot sandbox requestors' code here: {reason} To serve without a sandbox "
            '(requestors see "sandbox": "none" in its offer and may refuse it), pass --no-sandbox.'
        )


def sandbox_available() -> bool:
    """Whether bubblewrap and the cgroups a ``"bwrap"`` sandbox needs work here."""
    return sandbox_unavailable_reason() is None


@functools.cache
def sandbox_unavailable_reason() -> str | None:
    """Why no ``"bwrap"`` sandbox can run here (a sentence), or None when one can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return (
            "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap); "
            "install it, or choose the sandbox 'none' to run requestors' code unconfined."
        )
    # The options a worker's sandbox uses that older bubblewraps lack (--disable-userns, --size).
    command = [bwrap, *_namespace_options(), *_system_binds(), "--size", "1048576", "--tmpfs", "/tmp"]
    command += ["--remount-ro", "/", "--", "/usr/bin/true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap does not run: {error}"
    if result.returncode != 0:
        return f"bubblewrap cannot make a sandbox here: {result.stderr.strip()[:300]}"
    try:
        _cgroups.check()
    except GolemError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class SandboxLimits:
    """What the kernel holds one sandbox to."""

    memory_bytes: int
    threads: int
    pids: int = DEFAULT_PIDS
    scratch_bytes: int | None = None

    @property
    def scratch(self) -> int:
        """Bytes of scratch space (and of ``/tmp``): a quarter of the memory, at least 64 MiB."""
        return self.scratch_bytes or max(MIN_SCRATCH, self.memory_bytes // 4)


class Sandbox:
    """One agreement's sandbox: its control group, its sockets, and the two command lines
    (bubblewrap's around the worker's, and the relay's). Made by :meth:`create`; run by
    :func:`golem_jupyter.provider.workers.run_worker`; :meth:`close` removes what is left."""

    def __init__(self, directory: Path, scheduler: str, limits: SandboxLimits, gpus: int) -> None:
        self.directory = directory
        self.scheduler = scheduler
        self.limits = limits
        self.gpus = gpus
        self.label = directory.name
        self.cgroup: _cgroups.Cgroup | None = None
        _remove_stale_runtimes()
        self.runtime = Path(tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-"))
        self._sockets: list[socket.socket] = []
        self.contact = ""
        self.meter_read = self.meter_write = -1

    @classmethod
    def create(cls, directory: Path, *, scheduler: str, limits: SandboxLimits, gpus: int = 0) -> Sandbox:
        """Everything a sandbox needs, made before it starts; raises :class:`SandboxUnavailable`."""
        reason = sandbox_unavailable_reason()
        if reason is not None:
            raise SandboxUnavailable(reason)
        sandbox = cls(directory, scheduler, limits, gpus)
        try:
            sandbox._prepare()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _prepare(self) -> None:
        self.runtime.chmod(0o700)
        self.cgroup = _cgroups.create(
            f"golem-{self.label}-{os.getpid()}",
            memory_bytes=self.limits.memory_bytes,
            cpus=self.limits.threads,
            pids=self.limits.pids,
        )
        host, port = _host_port(self.scheduler)
        listen_host, contact_host = _listen_host(host, port)
        inbound = socket.create_server((listen_host, 0), backlog=LISTEN_BACKLOG)
        self._sockets.append(inbound)
        self.contact = f"{_bracketed(contact_host)}:{inbound.getsockname()[1]}"
        self.inbound_fd = inbound.fileno()
        (self.runtime / "run").mkdir(mode=0o700)
        self.connect_fd = self._unix_listener(self.runtime / "run" / "connect.sock")
        self.worker_socket = self.runtime / "worker.sock"
        self.worker_fd = self._unix_listener(self.worker_socket)
        self.meter_read, self.meter_write = os.pipe()
        etc = self.runtime / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(f"golem:x:{UID}:{UID}:golem:{HOME}:/bin/sh\n")
        (etc / "group").write_text(f"golem:x:{UID}:\n")
        (etc / "hosts").write_text("127.0.0.1 localhost golem-worker\n::1 localhost\n")

    def _unix_listener(self, path: Path) -> int:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sockets.append(sock)
        sock.bind(str(path))
        sock.listen(LISTEN_BACKLOG)
        return sock.fileno()

    # ------------------------------------------------------------------ the two processes

    @property
    def worker_fds(self) -> tuple[int, ...]:
        """What the sandbox inherits: the worker's listening socket and the meter's pipe."""
        return (self.worker_fd, self.meter_write)

    @property
    def relay_fds(self) -> tuple[int, ...]:
        return (self.inbound_fd, self.connect_fd)

    def worker_environment(self) -> dict[str, str]:
        """The whole environment inside (``--clearenv`` drops the agent's)."""
        threads = str(self.limits.threads)
        return {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": HOME,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            METER_FD_ENV: str(self.meter_write),
            "GOLEM_SANDBOX_CONNECT": str(CONNECT_PATH),
            "GOLEM_SANDBOX_LISTEN_FD": str(self.worker_fd),
            "GOLEM_SANDBOX_CONTACT": self.contact,
            **_import_root(),
        }

    def command(self, inner: list[str]) -> list[str]:
        """``inner`` (a worker command with paths under :data:`ROOT`) inside bubblewrap, the whole
        of it entering the control group before bubblewrap starts."""
        bwrap = [
            shutil.which("bwrap") or "bwrap",
            *_namespace_options(),
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "golem-worker",
            *_system_binds(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",  # shared memory counts against the scratch allowance, like /tmp
            str(self.limits.scratch),
            "--tmpfs",
            "/dev/shm",
            "--size",
            str(self.limits.scratch),
            "--tmpfs",
            "/tmp",
            "--size",
            str(HOME_BYTES),
            "--tmpfs",
            HOME,
            *_python_binds(),
        ]
        for name in ("passwd", "group", "hosts"):
            bwrap += ["--ro-bind", str(self.runtime / "etc" / name), f"/etc/{name}"]
        for path in ETC_SHARED:
            bwrap += ["--ro-bind-try", path, path]
        for name in ("ca.pem", "worker.pem", "worker.key"):
            bwrap += ["--ro-bind", str(self.directory / name), str(ROOT / name)]
        bwrap += ["--ro-bind", str(self.runtime / "run"), str(CONNECT_PATH.parent)]
        bwrap += ["--size", str(self.limits.scratch), "--tmpfs", str(ROOT / "scratch")]
        if self.gpus:
            for node in gpu_device_nodes():
                bwrap += ["--dev-bind", node, node]
        bwrap += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", str(ROOT / "scratch"), "--clearenv"]
        for name, value in self.worker_environment().items():
            bwrap += ["--setenv", name, value]
        bwrap += ["--", *inner]
        # sh is the process bwrap becomes (exec): it writes its own pid into each hierarchy first.
        procs = [str(p) for p in self.cgroup.procs_files]
        return ["/bin/sh", "-c", _ENTER_CGROUP, "sh", str(len(procs)), *procs, *bwrap]

    def relay_command(self) -> list[str]:
        host, port = _host_port(self.scheduler)
        config = RelayConfig(
            inbound_fd=self.inbound_fd,
            connect_fd=self.connect_fd,
            worker_socket=str(self.worker_socket),
            scheduler=(host, port),
            ca_file=str(self.directory / "ca.pem"),
            cert_file=str(self.directory / "worker.pem"),
            key_file=str(self.directory / "worker.key"),
            peer_role="worker",
            agent_pid=os.getpid(),
            label=self.label,
        )
        return [sys.executable, "-m", "golem_jupyter.provider._relay", config.to_json()]

    def close_inherited(self) -> None:
        """Close the agent's copies of what the two processes inherited (once both started)."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self.meter_write >= 0:
            os.close(self.meter_write)
            self.meter_write = -1

    # ------------------------------------------------------------------ from outside, while it runs

    def terminate(self, spare: int) -> int:
        """SIGTERM everything inside (the worker closes cleanly), except bubblewrap itself (``spare``):
        killing bubblewrap would SIGKILL the worker before it could."""
        return self.cgroup.signal_all(signal.SIGTERM, spare=(spare,)) if self.cgroup else 0

    def usage(self) -> dict[str, float]:
        """What the kernel counted for the whole sandbox."""
        if self.cgroup is None:
            return {}
        return {"sandbox_cpu_seconds": self.cgroup.cpu_seconds(), "sandbox_memory_peak": self.cgroup.memory_peak()}

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer ended a process inside for going past the memory limit."""
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def exit_reason(self, code: int) -> str:
        """Why the worker ended, for the agreement's record and the agent's log."""
        reason = f"worker exited with code {code}"
        if self.out_of_memory():
            reason += (
                f": killed by the kernel for going past its memory limit of {_size(self.limits.memory_bytes)} "
                f"(peak {_size(self.cgroup.memory_peak())})"
            )
        return reason

    def close(self) -> None:
        """Kill whatever is left inside, remove the control group and the sockets."""
        self.close_inherited()
        if self.meter_read >= 0:
            with contextlib.suppress(OSError):
                os.close(self.meter_read)
            self.meter_read = -1
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.runtime, ignore_errors=True)


RUNTIME_PREFIX = "golem-sandbox-"


def _remove_stale_runtimes() -> None:
    """Remove the socket directories that agents killed before they could clean up left behind."""
    for path in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*-*"):
        owner = path.name.removeprefix(RUNTIME_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(path, ignore_errors=True)


_ENTER_CGROUP = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
"""Writes the shell's pid into each cgroup.procs named, then becomes the command (bubblewrap)."""


def exit_code(returncode: int) -> int:
    """bubblewrap reports a command killed by signal N as 128 + N; the agent reports -N, as for an
    unsandboxed worker."""
    return -(returncode - 128) if 128 < returncode < 128 + 65 else returncode


def meter_line(line: bytes) -> dict[str, Any] | None:
    """The totals in one line the meter sent, or None if it is not a well-formed meter line."""
    if line.count(b"{") != 1 or b"[" in line:  # one flat object: no nesting to recurse into
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    clean: dict[str, Any] = {}
    for name, kind in (("cpu_seconds", float), ("gpu_seconds", float), ("last_change", float)):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return None
        clean[name] = kind(value)
    for name in ("tasks", "executing"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**53:
            return None
        clean[name] = value
    return clean


def gpu_device_nodes() -> list[str]:
    """The NVIDIA device nodes of this machine (``/dev/nvidia0``, ``nvidiactl``, ``nvidia-uvm``...)."""
    return sorted(glob.glob("/dev/nvidia*"))


# ---------------------------------------------------------------------------- command-line parts


def _namespace_options() -> list[str]:
    options = ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(UID), "--gid", str(UID)]
    if os.geteuid() == 0:
        options += ["--cap-drop", "ALL"]  # bwrap run by root keeps capabilities unless told
    return options


def _system_binds() -> list[str]:
    binds = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            binds += ["--ro-bind", str(path), str(path)]
    return binds


@functools.cache
def _python_dirs() -> tuple[str, ...]:
    """The directories the worker's Python needs, outermost only, none under ``/usr``."""
    import golem_jupyter

    paths = sysconfig.get_paths()
    candidates = {
        sys.prefix,
        sys.base_prefix,
        *(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths),
        *site.getsitepackages(),
        str(Path(os.path.realpath(sys.executable)).parent),
        str(Path(golem_jupyter.__file__).parent),
    }
    chosen: list[str] = []
    for path in sorted((os.path.realpath(p) for p in candidates if os.path.exists(p)), key=len):
        if path in ("/", "/usr") or any(path == c or path.startswith(c.rstrip("/") + "/") for c in ["/usr", *chosen]):
            continue
        chosen.append(path)
    return tuple(chosen)


@functools.cache
def _import_root() -> dict[str, str]:
    """``PYTHONPATH`` for the worker when the agent imports golem_jupyter from somewhere the
    interpreter's own paths (site-packages, its ``.pth`` files) do not name: the agent's working
    directory or its ``PYTHONPATH``. It names golem_jupyter's parent directory, under which the
    sandbox holds golem_jupyter and nothing else; never the agent's ``PYTHONPATH``."""
    import golem_jupyter

    root = os.path.realpath(Path(golem_jupyter.__file__).parent.parent)
    agent_paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    from_site = sys.path[1 + len(agent_paths) :]  # after the script's directory and PYTHONPATH
    if any(os.path.realpath(p) == root for p in from_site if p):
        return {}
    return {"PYTHONPATH": root}


def _python_binds() -> list[str]:
    binds = []
    for path in _python_dirs():
        binds += ["--ro-bind", path, path]
    for path in sorted({sys.prefix, sys.base_prefix} - set(_python_dirs())):
        real = os.path.realpath(path)
        if real != path and os.path.exists(real):  # a prefix reached through a symbolic link
            binds += ["--symlink", real, path]
    return binds


def _host_port(address: str) -> tuple[str, int]:
    """``tls://host:port`` -> (host, port)."""
    location = address.split("://", 1)[-1]
    host, _, port = location.rpartition(":")
    return host.strip("[]"), int(port)


def _listen_host(scheduler_host: str, scheduler_port: int) -> tuple[str, str]:
    """Where the worker's relay listens, and the address others reach it at: loopback for a
    scheduler on this machine's loopback; otherwise every interface, contacted at the address this
    machine reaches the scheduler from."""
    try:
        loopback = ipaddress.ip_address(scheduler_host).is_loopback
    except ValueError:
        loopback = scheduler_host == "localhost"
    if loopback:
        return "127.0.0.1", "127.0.0.1"
    try:
        family, _, _, _, address = socket.getaddrinfo(scheduler_host, scheduler_port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)  # no packet is sent: only the route is looked up
            own = probe.getsockname()[0]
    except OSError:
        own = socket.gethostbyname(socket.gethostname())
    return ("::" if ":" in own else "0.0.0.0"), own


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"
