"""Dask's ``tls://`` transport for a worker inside a provider's sandbox (preloaded first).

The sandbox has a network namespace of its own with nothing but ``lo``
(:mod:`golem_jupyter.provider.sandbox`). Addresses stay what Dask everywhere else knows them
as (the scheduler's, the peers', this worker's contact address); only the sockets under them
change, and both kinds are Unix sockets that lead to the relay the provider's agent runs outside:

* **out**: to open a connection to ``host:port`` the worker connects to the relay's socket
  (``$GOLEM_SANDBOX_CONNECT``), writes ``host port\\n`` and reads ``OK\\n`` (or ``NO reason\\n``);
  from then on that socket is the TCP connection, and TLS runs over it end to end as usual. The
  relay alone decides which addresses it connects to.
* **in**: the agent made this worker's listening socket (a Unix socket, inherited as
  ``$GOLEM_SANDBOX_LISTEN_FD``); the relay forwards every connection to the contact address
  (``$GOLEM_SANDBOX_CONTACT``, a TCP port outside) into it.

Unix sockets, not TCP sockets of the host's namespace, are what crosses into the sandbox: a host
TCP socket, even a connected or listening one, can be dissolved with ``connect(AF_UNSPEC)`` and
connected anywhere from the host's namespace; a Unix stream socket cannot.

Importing this module installs the transport when those variables are set (only in a sandbox).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import distributed.comm.tcp as tcp
from distributed.comm import registry as comm_backends
from distributed.comm.addressing import parse_host_port
from tornado.iostream import IOStream

CONNECT_ENV = "GOLEM_SANDBOX_CONNECT"
LISTEN_FD_ENV = "GOLEM_SANDBOX_LISTEN_FD"
CONTACT_ENV = "GOLEM_SANDBOX_CONTACT"
RELAY_PEER = ("sandbox-relay", 0)
"""The peer address of a connection that came in through the relay (the relay keeps the real one)."""
CONNECT_TIMEOUT = 30.0


class RelayRefused(ConnectionRefusedError):
    """The provider's relay does not connect this sandbox to that address."""


def relay_connect(path: str, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A blocking socket connected through the relay at ``path`` to ``host:port``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"{host} {port}\n".encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(1)  # byte by byte: nothing after the answer may be consumed here
            if not chunk or len(answer) > 512:
                raise RelayRefused(f"the relay closed the connection to {host}:{port}")
            answer += chunk
        if answer != b"OK\n":
            raise RelayRefused(f"the relay refused {host}:{port}: {answer.decode(errors='replace').strip()}")
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class _RelayClient:
    """Stands in for tornado's ``TCPClient``: the socket comes from the relay."""

    async def connect(
        self, host: str, port: int, *, max_buffer_size: Any = None, ssl_options: Any = None, **_: Any
    ) -> IOStream:
        loop = asyncio.get_running_loop()
        path = os.environ[CONNECT_ENV]
        try:
            sock = await loop.run_in_executor(None, relay_connect, path, host, port)
        except OSError as error:
            raise tcp.StreamClosedError(error) from error
        stream = IOStream(sock, max_buffer_size=max_buffer_size)
        if ssl_options is not None:
            stream = await stream.start_tls(False, ssl_options=ssl_options, server_hostname=host)
        return stream


class SandboxTLSConnector(tcp.TLSConnector):
    client = _RelayClient()


class SandboxTLSListener(tcp.TLSListener):
    """Listens on the Unix socket the agent made; reachable at the contact address outside."""

    async def start(self) -> None:
        self.tcp_server = tcp.TCPServer(max_buffer_size=tcp.MAX_BUFFER_SIZE, **self.server_args)
        self.tcp_server.handle_stream = self._handle_stream
        sock = socket.socket(fileno=int(os.environ[LISTEN_FD_ENV]))
        sock.setblocking(False)
        self.tcp_server.add_socket(sock)
        self.bound_address = parse_host_port(os.environ[CONTACT_ENV])

    async def _handle_stream(self, stream: IOStream, address: Any) -> None:
        await super()._handle_stream(stream, RELAY_PEER)


class SandboxTLSBackend(tcp.TLSBackend):
    _connector_class = SandboxTLSConnector
    _listener_class = SandboxTLSListener

    def resolve_address(self, loc: str) -> str:
        return loc  # no DNS in here: the relay resolves, outside

    def get_local_address_for(self, loc: str) -> str:
        return parse_host_port(os.environ[CONTACT_ENV])[0]


def _unix_aware(function: Any, unix: Any) -> Any:
    def wrapper(stream: Any, *args: Any) -> Any:
        sock = getattr(stream, "socket", None)
        if sock is not None and sock.family == socket.AF_UNIX:
            return unix(stream, *args)
        return function(stream, *args)

    wrapper.__wrapped__ = function
    return wrapper


def install() -> None:
    """Make ``tls://`` go through the relay in this process (idempotent)."""
    if isinstance(comm_backends.backends.get("tls"), SandboxTLSBackend):
        return
    comm_backends.backends["tls"] = SandboxTLSBackend()
    contact = parse_host_port(os.environ[CONTACT_ENV])
    # A Unix socket has no TCP keep-alive (the relay's TCP sockets have it) and no host:port name.
    tcp.set_tcp_timeout = _unix_aware(tcp.set_tcp_timeout, lambda stream: None)
    tcp.get_stream_address = _unix_aware(tcp.get_stream_address, lambda stream: tcp.unparse_host_port(*contact))


if os.environ.get(CONNECT_ENV) and os.environ.get(LISTEN_FD_ENV) and os.environ.get(CONTACT_ENV):
    install()
