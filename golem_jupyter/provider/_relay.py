"""The only way in and out of one sandbox's network namespace: a relay the agent runs outside.

``python -m golem_jupyter.provider._relay CONFIG_JSON`` is started by
:mod:`golem_jupyter.provider.workers` next to each sandboxed worker, with two listening sockets
the agent made and passes down:

* ``inbound_fd``, a TCP socket on the host (the worker's contact address): every connection to
  it (the scheduler, the session's other workers) is forwarded to the worker's Unix socket
  ``worker_socket``, whose listening end only the worker holds;
* ``connect_fd``, a Unix socket bound (read-only) into the sandbox: the worker writes
  ``host port\\n``, and the relay connects to that address, answers ``OK\\n`` and forwards bytes
  both ways, or answers ``NO reason\\n`` and closes.

It connects only to

1. the session's scheduler: the host and port of the agreement's scheduler address, resolved
   once when the relay starts (a name that resolves elsewhere later changes nothing);
2. an address that proves, in a TLS handshake, that it holds a certificate the session's CA
   issued in the worker role (``peer_role``): the session's other workers. The proof is checked
   on the address the connection then goes to, and kept ``PROOF_TTL`` seconds.

Another session's scheduler or workers hold another CA's certificates; the agent's negotiation
port, the chain's RPC node and every other service hold none: all are refused. A task can ask the
relay as the worker does, and gets the same answers. Refusals are rate limited and logged (to the
agent's log) at most ``LOG_PER_MINUTE`` times a minute.

What remains: to check a proof the relay opens a TCP connection to the address a task names and
sends it a TLS ClientHello (nothing the task chooses); the task learns only "refused", but could
time the answer to tell whether something listens there. Probes are limited to
``MAX_PROBES_PER_MINUTE`` and a refused address is not probed again for ``REFUSAL_TTL`` seconds. A
proven address stays allowed for ``PROOF_TTL`` seconds even if its worker goes away meanwhile; what
listens there next still demands its own session's certificate in its TLS handshake.

Deciding is asyncio's (accepting, reading the request, probing, connecting); copying is not: each
relayed connection gets a thread per direction that blocks in ``recv_into`` and ``sendall``, so a
message through the relay costs two system calls, not a turn of an event loop.

This runs outside the sandbox, as the agent's helper; it holds no key beyond the agreement's own
worker certificate (to be let into a peer's handshake) and dies with the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("golem_jupyter.provider.relay")

HEADER_LIMIT = 300
HEADER_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
PROOF_TTL = 30.0
REFUSAL_TTL = 5.0
MAX_CONNECTIONS = 512
MAX_WAITING = 256
"""Inbound connections accepted that have not sent their first byte yet, in all."""
MAX_WAITING_PER_ADDRESS = 16
"""... and from one IP address: an idle flood from one address cannot take the worker's port."""
FIRST_BYTE_TIMEOUT = 10.0
"""An inbound peer opens its TLS handshake at once; one silent this long is let go."""
"""Relayed connections (two threads each) beyond which new ones are dropped."""
MAX_PROBES_PER_MINUTE = 60
LOG_PER_MINUTE = 20
BUFFER_BYTES = 128 << 10
TCP_TIMEOUT_S = 30


@dataclass(frozen=True)
class RelayConfig:
    inbound_fd: int
    connect_fd: int
    worker_socket: str
    scheduler: tuple[str, int]
    ca_file: str
    cert_file: str
    key_file: str
    peer_role: str
    agent_pid: int
    label: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> RelayConfig:
        data = json.loads(text)
        data["scheduler"] = tuple(data["scheduler"])
        return cls(**data)


class _Pipe:
    """One relayed connection: a thread per direction copies bytes with blocking ``recv_into`` and
    ``sendall`` (the GIL is released while they wait), so a message costs the relay two system
    calls and no trip through an event loop. ``sendall`` blocking is the back-pressure."""

    def __init__(self, relay: Relay, a: socket.socket, b: socket.socket) -> None:
        self.relay = relay
        self.sockets = (a, b)
        self.running = 2
        self.lock = threading.Lock()
        for sock in self.sockets:
            sock.setblocking(True)
        with relay.lock:
            relay.connections += 1
        threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        threading.Thread(target=self._pump, args=(b, a), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        buffer = bytearray(BUFFER_BYTES)
        view = memoryview(buffer)
        try:
            while received := source.recv_into(buffer):
                sink.sendall(view[:received])
            sink.shutdown(socket.SHUT_WR)  # the end of one direction, passed on
        except OSError:
            for sock in self.sockets:  # a reset or a dead peer: unblock the other direction too
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            with self.lock:
                self.running -= 1
                last = self.running == 0
            if last:
                for sock in self.sockets:
                    sock.close()
                with self.relay.lock:
                    self.relay.connections -= 1


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.connections = 0
        self.lock = threading.Lock()
        self.scheduler: list[tuple[int, tuple[Any, ...]]] = []
        """(family, socket address) of the scheduler: the first its name resolved to, once."""
        self.proven: dict[tuple[str, int], float] = {}
        self.disproven: dict[tuple[str, int], float] = {}
        self.probes: list[float] = []
        self.logged: list[float] = []
        self.tasks: set[asyncio.Task] = set()
        self.waiting: dict[str, int] = {}
        """Inbound connections not yet relayed, by source address."""
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
        self.context.check_hostname = False  # a worker's certificate names its provider, not its host
        self.context.load_cert_chain(config.cert_file, config.key_file)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.config.scheduler
        # The one address the worker reaches the scheduler at. A name may resolve to more (the
        # requestor's own, then a service of this machine or its LAN): those are not the scheduler.
        family, *_, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        self.scheduler.append((family, address))
        inbound = socket.socket(fileno=self.config.inbound_fd)
        connect = socket.socket(fileno=self.config.connect_fd)
        self.spawn(self._accept(inbound, self._inbound))
        self.spawn(self._accept(connect, self._outbound))

    async def _accept(self, listener: socket.socket, handle: Any) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError:  # out of descriptors, for one: try again in a moment
                await asyncio.sleep(0.1)
                continue
            if self.connections >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            self.spawn(handle(sock))

    async def _inbound(self, sock: socket.socket) -> None:
        """From outside to the worker's contact address: on to the worker's Unix socket, once the
        peer has sent something (the start of its TLS handshake). Until then the connection costs
        no thread, and at most ``MAX_WAITING_PER_ADDRESS`` wait from one address."""
        try:
            source = sock.getpeername()[0]
        except OSError:
            sock.close()
            return
        if self.waiting.get(source, 0) >= MAX_WAITING_PER_ADDRESS or sum(self.waiting.values()) >= MAX_WAITING:
            sock.close()
            return
        self.waiting[source] = self.waiting.get(source, 0) + 1
        try:
            await asyncio.wait_for(_readable(sock), FIRST_BYTE_TIMEOUT)
        except (OSError, TimeoutError):
            sock.close()
            return
        finally:
            self.waiting[source] -= 1
            if not self.waiting[source]:
                del self.waiting[source]
        _tune(sock)
        worker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        worker.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(worker, self.config.worker_socket), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            sock.close()
            worker.close()
            return
        _Pipe(self, sock, worker)

    async def _outbound(self, sock: socket.socket) -> None:
        """From the sandbox: ``host port``, then the connection if the address is allowed."""
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(_read_line(loop, sock), HEADER_TIMEOUT)
            host, port_text = line.decode("ascii").split(" ")
            port = int(port_text)
            if not 0 < port < 65536 or not host or len(host) > 253:
                raise ValueError
        except (OSError, TimeoutError, ValueError, UnicodeDecodeError):
            await _answer(loop, sock, "NO malformed request")
            sock.close()
            return
        target, why = await self.authorize(host, port)
        remote = None
        if target is not None:
            try:
                remote = await _connected(target)
            except (OSError, TimeoutError) as error:
                why = f"cannot connect: {error}"
        else:
            self.log_refusal(host, port, why)
        if remote is None:
            await _answer(loop, sock, f"NO {why}")
            sock.close()
            return
        _tune(remote)
        if not await _answer(loop, sock, "OK"):
            sock.close()
            remote.close()
            return
        _Pipe(self, sock, remote)

    async def authorize(self, host: str, port: int) -> tuple[tuple[Any, ...] | None, str]:
        """The socket address to connect to for ``host:port``, or None and why not."""
        loop = asyncio.get_running_loop()
        if (host, port) == self.config.scheduler:
            return self.scheduler[0], ""
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return None, "unknown host"
        family, *_, address = infos[0]
        key = (address[0], address[1])
        if any(key == (known[0], known[1]) for _, known in self.scheduler):
            return (family, address), ""
        now = time.monotonic()
        for cache in (self.proven, self.disproven):
            if len(cache) > 1024:  # forget what has expired
                for stale in [k for k, until in cache.items() if until <= now]:
                    del cache[stale]
        if self.proven.get(key, 0) > now:
            return (family, address), ""
        if self.disproven.get(key, 0) > now:
            return None, "not the session's scheduler nor one of its workers"
        self.probes = [t for t in self.probes if t > now - 60]
        if len(self.probes) >= MAX_PROBES_PER_MINUTE:
            return None, "too many new addresses; try again later"
        self.probes.append(now)
        if await self._proves_session_worker(family, address):
            self.proven[key] = time.monotonic() + PROOF_TTL
            return (family, address), ""
        self.disproven[key] = time.monotonic() + REFUSAL_TTL
        return None, "not the session's scheduler nor one of its workers"

    async def _proves_session_worker(self, family: int, address: tuple[Any, ...]) -> bool:
        writer = None
        try:
            sock = await _connected((family, address))
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(sock=sock, ssl=self.context, server_hostname=address[0]), CONNECT_TIMEOUT
            )
            return _role(writer.get_extra_info("peercert")) == self.config.peer_role
        except (OSError, ssl.SSLError, TimeoutError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)

    def log_refusal(self, host: str, port: int, why: str) -> None:
        now = time.monotonic()
        self.logged = [t for t in self.logged if t > now - 60]
        if len(self.logged) < LOG_PER_MINUTE:
            self.logged.append(now)
            logger.warning("Sandbox %s: refused a connection to %s:%d (%s)", self.config.label, host, port, why)


async def _readable(sock: socket.socket) -> None:
    """Until ``sock`` has bytes to read (or its peer closed it)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """One request line, read byte by byte: what follows it belongs to the relayed connection."""
    line = b""
    while not line.endswith(b"\n"):
        byte = await loop.sock_recv(sock, 1)
        if not byte or len(line) >= HEADER_LIMIT:
            raise ValueError("no request line")
        line += byte
    return line[:-1]


async def _answer(loop: asyncio.AbstractEventLoop, sock: socket.socket, answer: str) -> bool:
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, answer.encode()[: HEADER_LIMIT - 1] + b"\n"), HEADER_TIMEOUT)
        return True
    except (OSError, TimeoutError):
        return False


async def _connected(target: tuple[int, tuple[Any, ...]]) -> socket.socket:
    family, address = target
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


def _role(peercert: object) -> str | None:
    """The organizational unit the certificate's subject names (the session CA writes the role there)."""
    if not isinstance(peercert, dict):
        return None
    units = [
        value
        for rdn in peercert.get("subject", ())
        for name, value in (a for a in rdn if isinstance(a, tuple) and len(a) == 2)
        if name == "organizationalUnitName"
    ]
    return units[0] if len(units) == 1 else None


def _tune(sock: socket.socket) -> None:
    """No Nagle delay, and TCP keep-alives as Dask sets them on its own sockets (a dead peer is noticed)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_TIMEOUT_S * 1000)


def _die_with(pid: int) -> None:
    """SIGKILL this process when its parent (the agent) dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != pid:
        os._exit(1)


async def _serve(config: RelayConfig) -> None:
    await Relay(config).start()
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    config = RelayConfig.from_json(argv[0])
    _die_with(config.agent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
