"""The Golem side panel in a real browser: JupyterLab on 127.0.0.1 with the installed extensions,
driven by Playwright in Debian's Chromium.

One walk through what a user does: open the panel with no market running, start the local market
from it, see its two providers' offers and the dev wallet, insert the connect cell from the panel,
run a ``%%golem`` cell, watch its job appear and turn confirmed, open the receipt and check its
transaction on the chain, close a session a dead kernel left open, switch to the dark theme, and
stop the market from the panel.
Screenshots of each step go to ``test-artifacts/side-panel/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from jupyter_core.paths import jupyter_config_path, jupyter_path

from golem_jupyter.chain import Chain, Wallet
from golem_jupyter.chain.types import new_id
from golem_jupyter.devnet import process_alive, running_devnet, running_providers, stop_devnet
from golem_jupyter.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "side-panel"
LAB_START = 90.0  # seconds JupyterLab may take to answer (about 4 s here, more on a busy machine)
MARKET_START = 150_000  # ms for the panel's Start button: the server waits up to 120 s for the agents
SETTLED = 180_000  # ms for the cells to run and the job's settlement to be mined
TX_HASH = re.compile(r"^0x[0-9a-f]{64}$")

GOLEM_CELL = "%%golem\nsquares = [n * n for n in range(40)]\ntotal = sum(squares)"
TOTAL = sum(n * n for n in range(40))


def _needs(condition: bool, reason: str) -> None:
    """Skip on a developer's machine without the browser; in CI a missing part is a failure."""
    if not condition:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    _needs(CHROMIUM.exists(), f"no {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _needs(False, "no playwright (pip install playwright; never `playwright install`)")
    return str(CHROMIUM)


def test_the_panel_is_installed_with_the_package():
    """`pip install` built the lab extension and put it where JupyterLab looks, beside the server extension."""
    found = [Path(d) / "golem-jupyter-labextension" for d in jupyter_path("labextensions")]
    installed = [d for d in found if (d / "package.json").exists()]
    assert installed, f"the lab extension is in none of {found}: `pip install -e .` builds it (needs npm)"
    assert list((installed[0] / "static").glob("remoteEntry.*.js"))
    assert (installed[0] / "install.json").exists()
    enabling = [
        json.loads(f.read_text())
        for f in (Path(d) / "jupyter_server_config.d" / "golem_jupyter.json" for d in jupyter_config_path())
        if f.exists()
    ]
    assert {"ServerApp": {"jpserver_extensions": {"golem_jupyter.server": True}}} in enabling


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    cells = [GOLEM_CELL, 'print("total", total)', "%golem close"]
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "execution_count": None,
                        "id": f"c{i}",
                        "metadata": {},
                        "outputs": [],
                        "source": source,
                    }
                    for i, source in enumerate(cells)
                ],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )


@pytest.fixture
def lab(tmp_path: Path, golem_home: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a fresh token, as installed (no extension enabled by hand).

    Its $GOLEM_HOME is the test's, so the local market the panel starts is this test's alone; the
    market and the server are stopped afterwards whatever happened."""
    root = tmp_path / "lab"
    settings = tmp_path / "settings" / "golem-jupyter-labextension"
    settings.mkdir(parents=True)
    root.mkdir()
    _notebook(root / "panel.ipynb")
    # Poll every second, so the test sees changes quickly (the default is 3 s).
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"pollInterval": 1000}))
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))  # no news toast
    token, port, log = secrets.token_hex(16), _free_port(), tmp_path / "lab.log"
    env = {k: v for k, v in os.environ.items() if k not in ("GOLEM_NETWORK", "GOLEM_PRIVATE_KEY")}
    env |= {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(url, token, server, log)
        yield Lab(url, token, root, log)
    finally:
        # SIGTERM: Jupyter shuts its kernels down and its atexit hook stops the market it started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        stop_devnet()  # a market left behind by a failed test
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "jupyterlab.log").write_bytes(log.read_bytes())


def _wait_until_answering(url: str, token: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + LAB_START
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/api/status", params={"token": token}, timeout=5).ok:
                return
        time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer within {LAB_START:.0f} s:\n{log.read_text()[-3000:]}")


def _open_abandoned_session(network, golem_home: Path, deposit: int) -> str:
    """A session of the dev wallet opened on-chain and recorded as open, nothing allocated: what a
    kernel that died while renting leaves behind."""
    chain = Chain.connect(network, Wallet.dev(0))
    session_id = new_id()
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    receipt = chain.escrow.open_session(session_id, deposit, deadline)
    with contextlib.closing(Ledger(golem_home / "ledger.sqlite")) as ledger:
        ledger.record_session(
            session_id=session_id,
            network=network.name,
            chain_id=network.chain_id,
            escrow=network.escrow,
            requestor=Wallet.dev(0).address,
            token="0x" + "00" * 20,
            budget=deposit,
            deadline=deadline,
            tx_hash=receipt.tx_hash,
            status="open",
            label="abandoned.ipynb",
        )
    return "0x" + session_id.hex()


def test_a_user_starts_the_market_runs_a_cell_and_reads_its_receipt_in_the_panel(
    lab: Lab, chromium_path: str, golem_home: Path
):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.set_default_timeout(30_000)

            def shot(name: str) -> None:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

            def golem(hook: str):
                return page.locator(f"[data-golem='{hook}']")

            page.goto(f"{lab.url}/lab/tree/panel.ipynb?token={lab.token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")

            # The Golem tab is in the left sidebar; the panel opens with no market running.
            page.locator(".jp-SideBar.jp-mod-left [data-id='golem-jupyter-panel']").click()
            expect(golem("panel")).to_be_visible()
            toggle = golem("devnet-toggle")
            expect(toggle).to_have_attribute("data-running", "false")
            expect(toggle).to_have_text("Start")
            assert running_devnet() is None
            shot("1-no-market")

            # Start: the server starts `golem devnet --providers 2`; the market's offers and the wallet show.
            toggle.click()
            expect(toggle).to_have_attribute("data-running", "true", timeout=MARKET_START)
            network = running_devnet()
            assert network is not None
            agents = {agent.address.lower() for agent in running_providers()}
            assert len(agents) == 2
            offers = golem("offer")
            expect(offers).to_have_count(2)
            shown = {offers.nth(i).get_attribute("data-provider").lower() for i in range(2)}
            assert shown == agents
            expect(golem("wallet-address")).to_contain_text(network.accounts[0].address)
            expect(golem("balance")).to_contain_text("ETH")
            expect(golem("error")).to_be_hidden()
            shot("2-market-started")

            # The panel's button inserts the connect cell at the top of the notebook.
            golem("insert-connect").click()
            first = page.locator(".jp-NotebookPanel .jp-Cell").first
            expect(first.locator(".jp-InputArea-editor")).to_contain_text("%load_ext golem_jupyter")
            expect(first.locator(".jp-InputArea-editor")).to_contain_text("%golem connect")

            # Run everything: connect, the %%golem cell, a print of its result, close.
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            jobs = golem("job")
            expect(jobs).to_have_count(1, timeout=SETTLED)
            job = jobs.first
            expect(job).to_have_attribute("data-status", "confirmed", timeout=SETTLED)
            expect(job.locator("[data-golem='job-progress']")).to_have_attribute("data-step", "3")
            output = page.locator(".jp-NotebookPanel .jp-Cell").nth(2).locator(".jp-OutputArea-output")
            expect(output).to_contain_text(f"total {TOTAL}", timeout=SETTLED)
            shot("3-job-confirmed")

            # The receipt: the settlement's transaction, as the ledger has it and as the chain mined it.
            graph_id = job.get_attribute("data-graph-id")
            job.click()
            expect(golem("receipt")).to_have_attribute("data-status", "confirmed")
            tx_hash = golem("receipt-tx").inner_text().strip()
            assert TX_HASH.match(tx_hash), tx_hash
            with contextlib.closing(Ledger(golem_home / "ledger.sqlite")) as ledger:
                recorded = ledger.graph(graph_id)
            assert recorded.status == "confirmed" and recorded.tx_hash == tx_hash
            expect(golem("receipt")).to_contain_text(recorded.payouts[0].provider[:6])
            mined = requests.post(
                network.rpc_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [tx_hash]},
                timeout=10,
            ).json()["result"]
            assert mined["status"] == "0x1" and mined["to"].lower() == network.escrow.lower()
            shot("4-receipt")

            # Sessions: the notebook's `%golem close` closed its own. A session a dead kernel left open
            # (nothing allocated, the whole deposit refundable) shows, with its amounts one click from
            # the exact wei; a POST without Jupyter's XSRF token is refused; its Close button closes it.
            expect(golem("sessions-message")).to_have_text("No open sessions.")
            deposit = 3 * 10**15 + 7
            session_id = _open_abandoned_session(network, golem_home, deposit)
            row = page.locator(f"[data-golem='session-row'][data-session='{session_id}']")
            expect(row).to_have_count(1)
            expect(row.locator("[data-golem='session-refundable']")).to_have_text("0.003 ETH")
            expect(row.locator("[data-golem='session-closable']")).to_have_text("now")
            deposited = row.locator("[data-golem='session-deposited']")
            expect(deposited).to_have_text("0.003 ETH")
            deposited.click()
            expect(deposited).to_have_text(f"{deposit} wei")
            forged = page.request.post(f"{lab.url}/golem/api/sessions/{session_id}/close", data="{}")
            assert forged.status == 403, (forged.status, forged.text())
            escrow = Chain.connect(network).escrow
            assert not escrow.session(session_id).closed
            shot("5-session-left-open")
            row.locator("[data-golem='close-session']").click()
            page.locator(".jp-Dialog .jp-mod-warn").click()
            expect(golem("close-result")).to_contain_text("closed", timeout=60_000)
            expect(golem("close-result")).to_contain_text(f"{deposit} wei")
            expect(row).to_have_count(0)
            assert escrow.session(session_id).closed
            [event] = escrow.events("SessionClosed", sessionId=session_id)
            assert event["refund"] == deposit
            with contextlib.closing(Ledger(golem_home / "ledger.sqlite")) as ledger:
                assert ledger.session(session_id).status == "closed"
            shot("6-session-closed")

            # The theme's CSS variables: the panel follows JupyterLab into the dark theme.
            light = golem("panel").evaluate("node => getComputedStyle(node).backgroundColor")
            page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
            page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
            page.wait_for_timeout(500)  # the theme's stylesheet settles
            dark = golem("panel").evaluate("node => getComputedStyle(node).backgroundColor")
            assert dark != light
            shot("7-dark-theme")

            # Stop: the market's processes end and the panel says so.
            pids = [network.pid, *(agent.pid for agent in running_providers())]
            toggle.click()
            expect(toggle).to_have_attribute("data-running", "false", timeout=60_000)
            expect(toggle).to_have_text("Start")
            assert running_devnet() is None
            assert not any(process_alive(pid) for pid in pids)
            shot("8-market-stopped")
        finally:
            browser.close()
    assert page_errors == []
