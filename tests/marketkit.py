"""A whole local market for tests: the embedded chain and provider agents as real processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from golem_jupyter.chain import Chain, Network, Wallet
from golem_jupyter.devnet import Devnet, DevnetProvider
from golem_jupyter.ledger import Ledger
from golem_jupyter.worker.meter import read_meter

CLAIM_GRACE = "1"
TESTS = Path(__file__).parent


@dataclass
class Market:
    """A running devnet with provider agents, and where their state lives."""

    home: Path
    network: Network
    providers: list[DevnetProvider]

    def chain(self, wallet: Wallet | None = None) -> Chain:
        return Chain.connect(self.network, wallet)

    def ledger(self) -> Ledger:
        return Ledger(self.home / "ledger.sqlite")

    def meter(self, provider: str, session_id: bytes) -> dict[str, float]:
        """The provider's own meter summed over its agreements in ``session_id``."""
        total = {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "tasks": 0}
        for directory in (self.home / "provider" / provider / "agreements").glob("*"):
            voucher = directory / "voucher.json"
            if not voucher.exists() or session_id.hex() not in voucher.read_text():
                continue
            meter = read_meter(directory / "meter.json")
            for key in total:
                total[key] += meter[key]
        return total

    def log(self, provider: DevnetProvider) -> str:
        return Path(provider.log).read_text()


@contextlib.contextmanager
def local_market(home: Path, providers: int = 3, gpu_providers: int = 0) -> Iterator[Market]:
    """Start a devnet of ``providers`` agents (``gpu_providers`` with a GPU) under ``home``; stop all after."""
    saved = {name: os.environ.get(name) for name in ("GOLEM_HOME", "PYTHONPATH")}
    os.environ["GOLEM_HOME"] = str(home)  # inherited by the provider processes
    # Schedulers and workers import task functions from the test modules, as a real user's
    # processes import the user's modules.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved["PYTHONPATH"]]))
    devnet = Devnet(
        port=0,
        providers=providers,
        gpu_providers=gpu_providers,
        connection_file=home / "devnet.json",
        provider_options=("--claim-grace", CLAIM_GRACE, "--min-deposit-seconds", "1"),
    )
    try:
        network = devnet.start()
        yield Market(home, network, list(devnet.provider_agents))
    finally:
        devnet.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
