"""Chains for tests: the embedded EVM in-process, or a real anvil node on 127.0.0.1.

Both speak the same JSON-RPC development methods (evm_snapshot, evm_revert,
evm_setNextBlockTimestamp, evm_increaseTime, evm_mine), so a test runs unchanged on either.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3

from golem_jupyter.chain.embedded import DEV_ACCOUNT_COUNT, DEV_MNEMONIC, EmbeddedProvider

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def anvil_binary() -> str | None:
    """anvil from $GOLEM_ANVIL, PATH, or contracts/node_modules (npm @foundry-rs/anvil)."""
    candidates = [os.environ.get("GOLEM_ANVIL"), shutil.which("anvil")]
    candidates += sorted(glob.glob(str(ROOT / "contracts/node_modules/@foundry-rs/anvil-*/bin/anvil")))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclass
class TestChain:
    """A chain under test and the development calls tests need."""

    name: str
    w3: Web3
    process: subprocess.Popen | None = field(default=None, repr=False)

    def rpc(self, method: str, *params: Any) -> Any:
        return self.w3.manager.request_blocking(method, list(params))

    def snapshot(self) -> Any:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: Any) -> None:
        self.rpc("evm_revert", snapshot_id)

    def now(self) -> int:
        return self.w3.eth.get_block("latest").timestamp

    def set_next_timestamp(self, timestamp: int) -> None:
        """The next mined block (e.g. the next transaction's) gets exactly ``timestamp``."""
        self.rpc("evm_setNextBlockTimestamp", hex(timestamp))

    def travel_to(self, timestamp: int) -> None:
        """Mine an empty block at ``timestamp``."""
        self.set_next_timestamp(timestamp)
        self.rpc("evm_mine")

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def embedded_chain() -> TestChain:
    return TestChain("embedded", Web3(EmbeddedProvider()))


def anvil_chain(binary: str) -> TestChain:
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--mnemonic",
            DEV_MNEMONIC,
            "--accounts",
            str(DEV_ACCOUNT_COUNT),
            "--balance",
            "10000",
            "--hardfork",
            "prague",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"anvil exited: {process.stderr.read().decode(errors='replace')}")
        try:
            _ = w3.eth.chain_id
            return TestChain("anvil", w3, process)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("anvil did not start within 20 s")
