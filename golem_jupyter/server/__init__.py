"""The Jupyter server extension: the REST API the Golem side panel of JupyterLab reads.

Under ``{base_url}golem/api/``:

=====================  =====================================================================
``GET status``         network, reachability, the requestor's wallet and escrow, the devnet
``GET providers``      the offers on the market, with reputation and whether each answers
``GET jobs``           graph executions from the ledger, newest first, page by page
``GET jobs/<id>``      one of them in full: payouts, settlement, session
``GET devnet``         the local market, if one runs
``POST devnet``        ``{"action": "start", "providers": N}`` or ``{"action": "stop"}``
=====================  =====================================================================

Every request needs Jupyter's token, like the rest of the server's API. Enabled by
``jupyter-config/jupyter_server_config.d/golem_jupyter.json``, or by hand with
``jupyter server extension enable golem_jupyter.server``.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from .devnet_control import DevnetControl
from .handlers import (
    DevnetHandler,
    JobHandler,
    JobsHandler,
    MissingHandler,
    ProvidersHandler,
    SessionCloseHandler,
    SessionsHandler,
    StatusHandler,
)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "golem_jupyter.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    web_app = serverapp.web_app
    control = DevnetControl()
    web_app.settings["golem_devnet"] = control
    api = url_path_join(web_app.settings["base_url"], "golem", "api")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(api, "status"), StatusHandler),
            (url_path_join(api, "providers"), ProvidersHandler),
            (url_path_join(api, "jobs"), JobsHandler),
            (url_path_join(api, "jobs", "([^/]+)"), JobHandler),
            (url_path_join(api, "sessions"), SessionsHandler),
            (url_path_join(api, "sessions", "([^/]+)", "close"), SessionCloseHandler),
            (url_path_join(api, "devnet"), DevnetHandler),
            (url_path_join(api, "(.*)"), MissingHandler),  # last: the first rule that matches wins
        ],
    )
    serverapp.log.info("Golem API at %s", api)
