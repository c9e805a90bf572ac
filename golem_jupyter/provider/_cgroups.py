"""Kernel-enforced limits for one sandbox: a control group per agreement (v2 or v1).

:func:`create` makes a child of the agent's own control group with a memory limit (no swap), a
CPU quota (``threads`` CPUs' worth per period) and a cap on the number of processes (threads
count). The agent puts the sandbox into it before bubblewrap starts (:attr:`Cgroup.procs_files`),
so everything the worker and the task start is inside, and reads it from outside, where the task
cannot write: the CPU the sandbox used, its memory peak and whether the kernel's OOM killer
struck.

cgroup v2 is used where the agent's group has the memory, cpu and pids controllers (or can enable
them for its children); v1 (``memory``, ``cpu``, ``cpuacct``, ``pids`` hierarchies) otherwise.
Never ``RLIMIT_AS``: it breaks CUDA.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GolemError

CFS_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")


class CgroupError(GolemError):
    """No control group with the controllers a sandbox needs can be made here."""


@dataclass
class Cgroup:
    """One sandbox's control group (one directory per hierarchy on v1)."""

    version: int
    dirs: dict[str, Path]
    """Controller name -> directory (v2: every controller maps to the same one)."""
    memory_bytes: int
    paths_made: list[Path] = field(default_factory=list)

    @property
    def procs_files(self) -> list[Path]:
        """Where a pid is written to move that process in (one file per hierarchy)."""
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def pids(self) -> list[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
        return sorted(pids)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used by everything that ran inside, in seconds."""
        try:
            if self.version == 2:
                stat = _keyed(self.dirs["cpu"] / "cpu.stat")
                return stat.get("usage_usec", 0) / 1e6
            return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return 0.0

    def memory_peak(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs["memory"] / name).read_text())
        except (OSError, ValueError):
            return 0

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in here for going past the limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _keyed(self.dirs["memory"] / name).get("oom_kill", 0)

    def signal_all(self, sig: int, *, spare: tuple[int, ...] = ()) -> int:
        """Send ``sig`` to every process inside except ``spare``; returns how many got it."""
        sent = 0
        for pid in self.pids():
            if pid in spare:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL everything inside until it is empty (a fork bomb keeps forking for a while)."""
        kill_file = self.dirs["memory"] / "cgroup.kill"
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            if self.version == 2 and kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            else:
                self.signal_all(signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left inside and remove the group's directories (deepest first)."""
        self.kill_all()
        for path in sorted(self.paths_made, key=lambda p: len(p.parts), reverse=True):
            for _ in range(50):  # a killed process leaves its cgroup a moment after it dies
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def create(name: str, *, memory_bytes: int, cpus: float, pids: int) -> Cgroup:
    """A new control group named ``name`` under the agent's own, with these limits set.

    A name ending in ``-<pid>`` marks the group as that agent's: empty groups of agents that are
    gone (killed before they could clean up) are removed on the way."""
    v2 = _v2_base()
    if v2 is not None:
        _remove_stale([v2])
        return _create_v2(v2, name, memory_bytes, cpus, pids)
    _remove_stale(list(_v1_bases().values()))
    return _create_v1(name, memory_bytes, cpus, pids)


def _remove_stale(bases: list[Path]) -> None:
    for base in bases:
        for path in base.glob("golem-*-*"):
            owner = path.name.rsplit("-", 1)[-1]
            if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                continue
            with contextlib.suppress(OSError):
                path.rmdir()  # refused while a process is inside


def check() -> None:
    """Raise :class:`CgroupError` saying why, if no sandbox control group can be made here."""
    probe = create(f"golem-probe-{os.getpid()}", memory_bytes=64 << 20, cpus=1, pids=16)
    probe.remove()


# ---------------------------------------------------------------------------- v1


def _create_v1(name: str, memory_bytes: int, cpus: float, pids: int) -> Cgroup:
    bases = _v1_bases()
    missing = [c for c in V1_CONTROLLERS if c not in bases]
    if missing:
        raise CgroupError(
            f"No cgroup v2 with the memory, cpu and pids controllers, and no cgroup v1 hierarchy for "
            f"{', '.join(missing)}: the sandbox cannot limit memory, CPU and processes here."
        )
    cgroup = Cgroup(1, {}, memory_bytes)
    try:
        for controller in V1_CONTROLLERS:
            path = bases[controller] / name
            if path not in cgroup.paths_made:  # cpu and cpuacct may share one hierarchy
                _mkdir(path)
                cgroup.paths_made.append(path)
            cgroup.dirs[controller] = path
        memory = cgroup.dirs["memory"]
        _write(memory / "memory.limit_in_bytes", memory_bytes)
        if (memory / "memory.memsw.limit_in_bytes").exists():  # memory plus swap: no swapping past it
            _write(memory / "memory.memsw.limit_in_bytes", memory_bytes)
        with contextlib.suppress(CgroupError):  # refused where the parent sets it for its subtree
            _write(memory / "memory.swappiness", 0)
        cpu = cgroup.dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", CFS_PERIOD_US)
        _write(cpu / "cpu.cfs_quota_us", max(1000, int(cpus * CFS_PERIOD_US)))
        _write(cgroup.dirs["pids"] / "pids.max", pids)
    except BaseException:
        cgroup.remove()
        raise
    return cgroup


def _v1_bases() -> dict[str, Path]:
    """Controller -> the agent's own group in that v1 hierarchy."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            for controller in parts[1].split(","):
                own[controller] = parts[2]
    bases = {}
    for mount_root, mount_point, fstype, options in _cgroup_mounts():
        if fstype != "cgroup":
            continue
        for controller in set(options.split(",")) & set(V1_CONTROLLERS):
            path = own.get(controller)
            if path is None:
                continue
            bases[controller] = _inside(mount_point, mount_root, path)
    return bases


# ---------------------------------------------------------------------------- v2


def _v2_base() -> Path | None:
    """The agent's own v2 group, if v2 has the controllers a sandbox needs (else None: use v1)."""
    own = next((line[3:] for line in _read("/proc/self/cgroup").splitlines() if line.startswith("0::")), None)
    if own is None:
        return None
    for mount_root, mount_point, fstype, _ in _cgroup_mounts():
        if fstype == "cgroup2":
            base = _inside(mount_point, mount_root, own)
            available = set(_read(base / "cgroup.controllers").split())
            if set(V2_CONTROLLERS) <= available:
                return base
    return None


def _create_v2(base: Path, name: str, memory_bytes: int, cpus: float, pids: int) -> Cgroup:
    _enable_v2_controllers(base)
    path = base / name
    _mkdir(path)
    cgroup = Cgroup(2, dict.fromkeys((*V2_CONTROLLERS, "cpuacct"), path), memory_bytes, [path])
    try:
        _write(path / "memory.max", memory_bytes)
        if (path / "memory.swap.max").exists():
            _write(path / "memory.swap.max", 0)
        _write(path / "cpu.max", f"{max(1000, int(cpus * CFS_PERIOD_US))} {CFS_PERIOD_US}")
        _write(path / "pids.max", pids)
    except BaseException:
        cgroup.remove()
        raise
    return cgroup


def _enable_v2_controllers(base: Path) -> None:
    """Let ``base``'s children use the controllers. cgroup v2 allows that only while ``base`` holds
    no process itself, so an agent alone in its group (a systemd unit with ``Delegate=yes``) first
    moves itself into a leaf child ``agent``; an agent sharing its group with others is refused."""
    wanted = set(V2_CONTROLLERS)
    if wanted <= set(_read(base / "cgroup.subtree_control").split()):
        return
    control = " ".join(f"+{c}" for c in V2_CONTROLLERS)
    try:
        _write(base / "cgroup.subtree_control", control)
        return
    except CgroupError:
        pass
    inside = {int(p) for p in _read(base / "cgroup.procs").split()}
    if inside != {os.getpid()}:
        raise CgroupError(
            f"The agent's cgroup {base} holds other processes ({len(inside)}), so it cannot give its "
            "sandboxes memory, cpu and pids controllers: run the agent in a cgroup of its own "
            "(e.g. systemd-run --user -p Delegate=yes golem provider run ...)."
        )
    leaf = base / "agent"
    _mkdir(leaf, exist_ok=True)
    _write(leaf / "cgroup.procs", os.getpid())
    _write(base / "cgroup.subtree_control", control)


# ---------------------------------------------------------------------------- helpers


def _cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of every cgroup mount, from mountinfo."""
    mounts = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        tail = line.split(" - ", 1)[1].split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            mounts.append((fields[3], fields[4], tail[0], tail[2]))
    return mounts


def _inside(mount_point: str, mount_root: str, path: str) -> Path:
    """Where the group ``path`` (as /proc/self/cgroup names it) lies under this mount."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return Path(mount_point) / path.lstrip("/")


def _keyed(path: Path) -> dict[str, int]:
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _write(path: Path, value: object) -> None:
    try:
        path.write_text(f"{value}\n")
    except OSError as error:
        raise CgroupError(f"Cannot write {value} to {path}: {error.strerror}.") from None


def _mkdir(path: Path, exist_ok: bool = False) -> None:
    try:
        path.mkdir(exist_ok=exist_ok)
    except FileExistsError:
        raise CgroupError(f"The control group {path} exists already.") from None
    except OSError as error:
        raise CgroupError(f"Cannot create the control group {path}: {error.strerror}.") from None
