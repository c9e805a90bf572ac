"""The committed contract artifacts: complete, fresh against the Solidity sources, and their
custom errors known to Python by the same signature.

Freshness is checked twice: by source hashes (no Node needed), and by recompiling with solc-js
(``node contracts/build.mjs --check``) where Node and the npm packages are installed. Under CI
(``CI=true``) missing Node or solc is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_utils import keccak

from golem_jupyter.chain.artifacts import ARTIFACTS_DIR, load_artifact, stale_sources
from golem_jupyter.chain.errors import ERRORS, decode_revert

ROOT = Path(__file__).resolve().parent.parent
TEST_ARTIFACTS = Path(__file__).parent / "artifacts"
ARTIFACT_FILES = sorted(ARTIFACTS_DIR.glob("*.json")) + sorted(TEST_ARTIFACTS.glob("*.json"))
REQUIRED_KEYS = {"abi", "bytecode", "compiler", "sources_sha256"}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def canonical(entry: dict) -> str:
    """``Name(type,...)`` of an ABI error entry, tuples spelled out as Solidity hashes them."""

    def kind(param: dict) -> str:
        if param["type"].startswith("tuple"):
            return "(" + ",".join(kind(c) for c in param["components"]) + ")" + param["type"][len("tuple") :]
        return param["type"]

    return f"{entry['name']}({','.join(kind(p) for p in entry['inputs'])})"


def abi_errors(name: str) -> list[dict]:
    return [entry for entry in load_artifact(name)["abi"] if entry["type"] == "error"]


def test_the_expected_artifacts_are_committed():
    assert {p.name for p in ARTIFACTS_DIR.glob("*.json")} == {"GolemEscrow.json", "ProviderRegistry.json"}
    assert {p.name for p in TEST_ARTIFACTS.glob("*.json")} >= {
        "FeeToken.json",
        "ReentrantReceiver.json",
        "TestToken.json",
    }


@pytest.mark.parametrize("path", ARTIFACT_FILES, ids=relative)
def test_an_artifact_has_abi_bytecode_compiler_and_source_hashes(path):
    artifact = json.loads(path.read_text(encoding="utf-8"))
    assert REQUIRED_KEYS <= artifact.keys()
    assert isinstance(artifact["abi"], list) and artifact["abi"]
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
    bytes.fromhex(artifact["bytecode"][2:])
    assert artifact["compiler"].startswith("solc")
    assert artifact["sources_sha256"]
    for source, digest in artifact["sources_sha256"].items():
        assert isinstance(source, str) and len(digest) == 64 and int(digest, 16) >= 0
    assert artifact["sourceName"] in artifact["sources_sha256"]
    assert (ROOT / artifact["sourceName"]).is_file()
    assert artifact["contractName"] == path.stem


@pytest.mark.parametrize("path", ARTIFACT_FILES, ids=relative)
def test_an_artifact_is_fresh_against_its_sources(path):
    artifact = json.loads(path.read_text(encoding="utf-8"))
    assert stale_sources(artifact, ROOT) == [], "run: node contracts/build.mjs"


def test_stale_sources_names_a_changed_source(tmp_path):
    source = tmp_path / "contracts" / "X.sol"
    source.parent.mkdir()
    source.write_text("contract X {}\n")
    artifact = {"sources_sha256": {"contracts/X.sol": "0" * 64, "@openzeppelin/contracts/Y.sol": "1" * 64}}
    # Library sources (not under the repository) are not checked.
    assert stale_sources(artifact, tmp_path) == ["contracts/X.sol"]


def test_the_committed_artifacts_match_a_fresh_compilation():
    node = shutil.which("node")
    solc = ROOT / "contracts" / "node_modules" / "solc"
    if node is None or not solc.is_dir():
        missing = "node" if node is None else "contracts/node_modules/solc (npm install in contracts/)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is required under CI to check the artifacts")
        pytest.skip(f"{missing} not installed")
    result = subprocess.run(
        [node, "contracts/build.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


# ---------------------------------------------------------------------------- custom errors


@pytest.mark.parametrize("contract", ["GolemEscrow", "ProviderRegistry"])
def test_every_custom_error_in_the_abi_has_a_python_class_with_the_same_signature(contract):
    entries = abi_errors(contract)
    assert entries, f"{contract} declares no custom errors"
    for entry in entries:
        assert entry["name"] in ERRORS, f"no class for {canonical(entry)} in golem_jupyter.chain.errors"
        cls = ERRORS[entry["name"]]
        assert cls.canonical() == canonical(entry)
        assert cls.argument_names() == [p["name"] for p in entry["inputs"]]
        assert cls.selector() == keccak(text=canonical(entry))[:4]


@pytest.mark.parametrize("contract", ["GolemEscrow", "ProviderRegistry"])
def test_every_custom_error_decodes_to_its_class_with_a_readable_message(contract):
    from eth_abi import encode

    samples = {
        "address": "0x000000000000000000000000000000000000dEaD",
        "bytes32": b"\x01" * 32,
        "string": "endpoint",
        "uint256": 7,
        "uint64": 1_700_000_000,
    }
    for entry in abi_errors(contract):
        cls = ERRORS[entry["name"]]
        types = cls.argument_types()
        data = cls.selector() + encode(types, [samples[t] for t in types])
        error = decode_revert(data)
        assert type(error) is cls
        assert set(error.fields) == set(cls.argument_names())
        message = str(error)
        assert message and "{" not in message
        if "address" in types:
            assert "0x000000000000000000000000000000000000dEaD" in message
