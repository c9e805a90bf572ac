"""Serve the embedded chain over JSON-RPC HTTP, so that other processes share one chain.

Provider agents and kernels started by ``golem devnet`` reach the embedded EVM through this
server exactly as they would reach a real node. Only 127.0.0.1 is served by default.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from .embedded import EmbeddedProvider

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8 * 1024 * 1024

# JSON-RPC bodies carry quantities as hex strings; eth-tester's formatted results are ints.
# Fields that are byte strings even when eth-tester hands them over as ints:
_DATA_FIELDS = {"logsBloom": 256}


def _to_json_rpc(value: Any, key: str | None = None) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if key in _DATA_FIELDS:
            return "0x" + value.to_bytes(_DATA_FIELDS[key], "big").hex()
        return hex(value)
    if isinstance(value, (bytes, bytearray, HexBytes)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _to_json_rpc(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_rpc(v) for v in value]
    return value


class RPCServer:
    """A threaded HTTP server that forwards JSON-RPC requests to an :class:`EmbeddedProvider`."""

    def __init__(self, provider: EmbeddedProvider, host: str = "127.0.0.1", port: int = 0) -> None:
        self.provider = provider
        w3 = Web3(provider, middleware=[])
        # The provider's own formatting middleware turns eth-tester values into RPC shapes.
        self._request: Callable[[str, Any], dict[str, Any]] = provider.request_func(w3, w3.middleware_onion)
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RPCServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="golem-rpc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RPCServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object."""
        request_id = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(request_id, -32600, "invalid request: expected an object with a 'method' string")
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(request_id, -32602, "invalid params: expected a list")
        try:
            response = self._request(request["method"], params)
        except Exception as error:
            log.debug("rpc %s failed", request["method"], exc_info=True)
            return _error(request_id, -32603, f"{type(error).__name__}: {error}")
        response = dict(response)
        response["id"] = request_id
        if "result" in response:
            response["result"] = _to_json_rpc(response["result"])
        return response


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _handler_for(server: RPCServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Keep-alive connections: with Nagle's algorithm on, a reply (headers, then body) waits
        # for the client's delayed ACK, about 40 ms a request.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                self._reply(_error(None, -32600, "request too large"), status=413)
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._reply(_error(None, -32700, "parse error: body is not JSON"))
                return
            if isinstance(body, list):
                self._reply([server.handle(item) for item in body])
            else:
                self._reply(server.handle(body))

        def _reply(self, payload: Any, status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("rpc: " + format, *args)

    return Handler
