"""The REST handlers under ``/golem/api/``: thin, they check the request and hand the work to a thread.

Every answer is JSON. An error is ``{"error": "..."}``: what happened and what to do, in a
sentence or two, with the status code saying whose problem it is. Tracebacks go to the server's
log only.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.web import HTTPError

from ..errors import GolemError
from . import chainstate, records, views
from .devnet_control import DevnetConflict, DevnetControl, DevnetFailed

MAX_PAGE = 200
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer
MAX_PROVIDERS = 8
DEFAULT_PROVIDERS = 2
ID = re.compile(r"^0x[0-9a-fA-F]{64}$")

# What a refusal by Jupyter itself (no token, a bad method) means to the side panel.
_STATUS_MESSAGES = {
    403: "This request carries no valid Jupyter token; reload JupyterLab, or pass the server's token.",
    404: "There is no such Golem API endpoint; the API lives under /golem/api/ (status, providers, jobs, sessions, "
    "devnet).",
    405: "This Golem API endpoint does not accept that method.",
}


class ApiError(HTTPError):
    """A refusal the caller can act on: its status code and the sentence the side panel shows."""

    def __init__(self, status_code: int, message: str) -> None:
        # HTTPError formats log_message with %, so a literal % in the message must be doubled.
        super().__init__(status_code, log_message=message.replace("%", "%%"))
        self.message = message


class GolemHandler(APIHandler):
    """Base of the handlers: every answer JSON, every error ``{"error": ...}``."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            message = error.message
        elif isinstance(error, GolemError):  # raised on purpose, so its message is meant for people
            message = str(error)
        elif status_code in _STATUS_MESSAGES:
            message = _STATUS_MESSAGES[status_code]
        elif isinstance(error, HTTPError):
            message = f"The request was refused ({status_code} {self._reason})."
        else:
            message = "The Golem server extension failed unexpectedly; the Jupyter server's log has the details."
        self.finish(json.dumps({"error": message}))

    def reply(self, document: dict[str, Any]) -> None:
        self.finish(json.dumps(document))

    @property
    def devnet(self) -> DevnetControl:
        return self.settings["golem_devnet"]

    def network_argument(self) -> str | None:
        return self.get_argument("network", None) or None

    def int_argument(self, name: str, default: int, low: int, high: int) -> int:
        text = self.get_argument(name, None)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:  # not a number, or one of thousands of digits
            value = None
        if value is None or not low <= value <= high:
            bound = f"from {low} to {high}" if high < MAX_OFFSET else f"of at least {low}"
            raise ApiError(400, f"{name} must be a whole number {bound}, got {text!r:.50}.")
        return value


def graph_id_argument(text: str, what: str) -> str:
    if not ID.match(text):
        raise ApiError(400, f"{what} must be 0x followed by 64 hex digits, got {text!r}.")
    return text.lower()


class StatusHandler(GolemHandler):
    @web.authenticated
    async def get(self) -> None:
        status, devnet = await asyncio.gather(
            asyncio.to_thread(chainstate.read_status, self.network_argument()),
            asyncio.to_thread(self.devnet.view),
        )
        self.reply(status | {"devnet": devnet})


class ProvidersHandler(GolemHandler):
    @web.authenticated
    async def get(self) -> None:
        try:
            network, offers, scores = await asyncio.to_thread(chainstate.read_offers, self.network_argument())
        except chainstate.UNAVAILABLE as error:
            raise ApiError(503, str(error)) from None
        reachable = await chainstate.reachable([offer.endpoint for offer in offers])
        self.reply(
            {
                "network": network.name,
                "offers": [
                    views.offer_view(offer, chainstate.reputation_of(offer, scores), ok)
                    for offer, ok in zip(offers, reachable, strict=True)
                ],
            }
        )


class JobsHandler(GolemHandler):
    @web.authenticated
    async def get(self) -> None:
        limit = self.int_argument("limit", 20, 1, MAX_PAGE)
        offset = self.int_argument("offset", 0, 0, MAX_OFFSET)
        session = self.get_argument("session", None)
        session_id = graph_id_argument(session, "session") if session is not None else None
        self.reply(await asyncio.to_thread(records.jobs, limit, offset, session_id))


class JobHandler(GolemHandler):
    @web.authenticated
    async def get(self, graph_id: str) -> None:
        graph_id = graph_id_argument(graph_id, "A job id (the graph id)")
        job = await asyncio.to_thread(records.job, graph_id)
        if job is None:
            raise ApiError(404, f"No job {graph_id} in the ledger {records.ledger_path()}.")
        self.reply({"job": job})


class SessionsHandler(GolemHandler):
    """The wallet's escrow sessions (``?all=1``: closed ones too), as ``golem sessions`` lists them."""

    @web.authenticated
    async def get(self) -> None:
        include_closed = self.get_argument("all", "0") not in ("0", "", "false")
        try:
            self.reply(await asyncio.to_thread(chainstate.read_sessions, self.network_argument(), include_closed))
        except chainstate.UNAVAILABLE as error:
            raise ApiError(503, str(error)) from None


class SessionCloseHandler(GolemHandler):
    """POST: close a session of the wallet, as ``golem sessions close`` does (behind Jupyter's XSRF check)."""

    @web.authenticated
    async def post(self, session_id: str) -> None:
        session_id = graph_id_argument(session_id, "A session id")
        try:
            self.reply(await chainstate.close_session(self.network_argument(), session_id))
        except chainstate.SessionUnknown as error:
            raise ApiError(404, str(error)) from None
        except chainstate.UNAVAILABLE as error:
            raise ApiError(503, str(error)) from None


class DevnetHandler(GolemHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await asyncio.to_thread(self.devnet.view))

    @web.authenticated
    async def post(self) -> None:
        action, providers = self._command()
        try:
            if action == "start":
                self.reply(await self.devnet.start(providers))
            else:
                self.reply(await self.devnet.stop())
        except DevnetConflict as error:
            raise ApiError(409, str(error)) from None
        except DevnetFailed as error:
            raise ApiError(500, str(error)) from None

    def _command(self) -> tuple[str, int]:
        """The action and the number of providers from the JSON body, or a 400 saying what is wrong."""
        usage = f'Send {{"action": "start", "providers": N}} (N from 1 to {MAX_PROVIDERS}) or {{"action": "stop"}}.'
        try:
            body = json.loads(self.request.body or b"")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, f"The request body is not JSON. {usage}") from None
        if not isinstance(body, dict) or body.get("action") not in ("start", "stop"):
            raise ApiError(400, f"Unknown request {body!r:.200}. {usage}")
        if body["action"] == "stop":
            return "stop", 0
        providers = body.get("providers", DEFAULT_PROVIDERS)
        if isinstance(providers, bool) or not isinstance(providers, int) or not 1 <= providers <= MAX_PROVIDERS:
            raise ApiError(400, f"providers must be a whole number from 1 to {MAX_PROVIDERS}, got {providers!r:.50}.")
        return "start", providers


class MissingHandler(GolemHandler):
    """Anything else under /golem/api/: a JSON 404 rather than Jupyter's HTML page."""

    @web.authenticated
    def get(self, path: str) -> None:
        raise ApiError(404, _STATUS_MESSAGES[404])

    post = put = patch = delete = get
