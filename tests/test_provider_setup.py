"""How an operator starts a provider agent: its key's password, and the sandbox tier it offers.

Real ``golem provider run`` processes against a devnet. A keystore password reaches the agent
from a file (or a prompt), never from its environment, which requestors' code run without a
sandbox would inherit. Without bubblewrap the agent refuses to serve unless the operator says
``--no-sandbox``, and its offer states the tier either way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from marketkit import Market, local_market, wait_until

from golem_jupyter.chain import Wallet
from golem_jupyter.chain.errors import NoActiveOffer
from golem_jupyter.chain.transactions import Transactor
from golem_jupyter.provider.sandbox import SANDBOX_ENV, sandbox_available

pytestmark = pytest.mark.timeout(300)

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with local_market(tmp_path_factory.mktemp("setup"), providers=1) as market:
        yield market


def agent_environment(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOLEM_WALLET_PASSWORD", SANDBOX_ENV)}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@contextmanager
def agent(market: Market, directory: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[dict]:
    """A ``golem provider run`` on the market; yields its ready file's contents once it serves."""
    ready = directory / "ready.json"
    log = directory / "agent.log"
    command = [sys.executable, "-m", "golem_jupyter.cli", "provider", "run", "--network"]
    command += [str(market.home / "devnet.json"), "--ready-file", str(ready), "--min-deposit-seconds", "1", *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_until(lambda: ready.exists() or process.poll() is not None, 60, "the agent serves or exits")
        assert ready.exists(), f"the agent exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        yield {**json.loads(ready.read_text()), "pid": process.pid}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def refused(market: Market, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "golem_jupyter.cli", "provider", "run", "--network"]
    command += [str(market.home / "devnet.json"), *options]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result
    return result


def test_the_keystore_password_comes_from_a_file_and_never_from_the_environment(market: Market, tmp_path: Path) -> None:
    """Before: the agent read $GOLEM_WALLET_PASSWORD, and its children (and /proc/<agent>/environ)
    held it. After: an agent given that variable refuses to start and says how to do it; one given
    --password-file decrypts its keystore, serves under its address, and holds the password
    nowhere in its environment or command line."""
    wallet = Wallet.create(PASSWORD, tmp_path / "keystore.json")
    chain = market.chain(Wallet.dev(0))
    Transactor(chain.w3, Wallet.dev(0).account).send(to=wallet.address, value=10**18)  # gas for its offer
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    keystore = ("--keystore", str(tmp_path / "keystore.json"))

    result = refused(market, *keystore, env=agent_environment(GOLEM_WALLET_PASSWORD=PASSWORD, GOLEM_SANDBOX="none"))
    assert "does not read $GOLEM_WALLET_PASSWORD" in result.stderr and "--password-file" in result.stderr

    with agent(market, tmp_path, *keystore, "--password-file", str(password_file), env=agent_environment()) as ready:
        assert ready["address"] == wallet.address
        process = psutil.Process(ready["pid"])
        assert PASSWORD not in json.dumps(process.environ()) and PASSWORD not in " ".join(process.cmdline())
        assert market.chain().registry.offer_of(wallet.address).endpoint == ready["endpoint"]


def test_without_bubblewrap_the_agent_serves_only_when_told_and_its_offer_says_so(
    market: Market, tmp_path: Path
) -> None:
    """With no bwrap on its PATH the agent refuses to start, naming --no-sandbox; with
    --no-sandbox it serves and its offer says ``"sandbox": "none"``. Where bubblewrap runs, an
    agent's offer says ``"bwrap"``."""
    no_bwrap = agent_environment(PATH=str(Path(sys.executable).parent))
    result = refused(market, "--dev-account", "11", env=no_bwrap)
    assert "bubblewrap is not installed" in result.stderr and "--no-sandbox" in result.stderr
    with pytest.raises(NoActiveOffer):  # nothing was published
        market.chain().registry.offer_of(Wallet.dev(11).address)

    with agent(market, tmp_path, "--dev-account", "11", "--no-sandbox", env=no_bwrap) as ready:
        offer = market.chain().registry.offer_of(ready["address"])
        assert offer.capabilities["sandbox"] == "none"

    if sandbox_available():
        [provider] = market.providers
        assert market.chain().registry.offer_of(provider.address).capabilities["sandbox"] == "bwrap"
