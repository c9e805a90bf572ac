"""The chain seam: the Python backend protocols and the Solidity interfaces.

Python: the built-in ``Escrow`` and ``Registry`` clients satisfy ``EscrowBackend`` and ``RegistryBackend``
(``isinstance`` and member by member, with compatible signatures), and the protocols cover every method
the rest of the code base calls on ``chain.escrow`` and ``chain.registry``.

Solidity: ``GolemEscrow`` and ``ProviderRegistry`` implement ``IGolemEscrow`` and ``IProviderRegistry``,
and every function, event and error of their compiled ABIs is declared by the interface (read from the
source text, no Node needed), with the very same signature and NatSpec (compiled with solc-js where it is
installed; under CI a missing Node or solc is a failure).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import tomllib
import typing
from pathlib import Path

import pytest
from conftest import Deployed

from golem_jupyter.chain import (
    Chain,
    Escrow,
    EscrowBackend,
    Network,
    Registry,
    RegistryBackend,
    Wallet,
)
from golem_jupyter.chain.artifacts import load_artifact

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "golem_jupyter"
CONTRACTS = ROOT / "contracts"
NODE_MODULES = CONTRACTS / "node_modules"

PROTOCOLS = [(EscrowBackend, Escrow), (RegistryBackend, Registry)]
# contract name -> (interface name, interface source)
INTERFACES = {
    "GolemEscrow": ("IGolemEscrow", "contracts/interfaces/IGolemEscrow.sol"),
    "ProviderRegistry": ("IProviderRegistry", "contracts/interfaces/IProviderRegistry.sol"),
}
# ABI entries a contract gets from OpenZeppelin rather than from its own interface: errors of the
# libraries and bases it uses (an interface cannot redeclare them), and IERC5267, which IGolemEscrow
# extends. name -> the OpenZeppelin source that declares it.
FROM_OPENZEPPELIN = {
    "eip712Domain": "@openzeppelin/contracts/interfaces/IERC5267.sol",
    "EIP712DomainChanged": "@openzeppelin/contracts/interfaces/IERC5267.sol",
    "ReentrancyGuardReentrantCall": "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol",
    "SafeERC20FailedOperation": "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol",
    "InvalidShortString": "@openzeppelin/contracts/utils/ShortStrings.sol",
    "StringTooLong": "@openzeppelin/contracts/utils/ShortStrings.sol",
}
# Interfaces an interface extends -> what they contribute to the ABI.
INHERITED = {"IERC5267": {"eip712Domain", "EIP712DomainChanged"}}
ABI_KINDS = ("function", "event", "error")


# ---------------------------------------------------------------------------- Python protocols


def protocol_members(protocol: type) -> dict[str, object]:
    """The members a protocol declares: name -> function or property."""
    return {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    }


def test_the_protocols_are_runtime_checkable_and_documented():
    for protocol, _ in PROTOCOLS:
        assert getattr(protocol, "_is_runtime_protocol", False), protocol
        assert protocol.__doc__
        members = protocol_members(protocol)
        assert members
        for name, member in members.items():
            doc = (member.fget if isinstance(member, property) else member).__doc__
            assert doc and len(doc.strip().splitlines()) == 1, f"{protocol.__name__}.{name} needs a one-line docstring"


@pytest.mark.parametrize(("protocol", "cls"), PROTOCOLS, ids=lambda p: p.__name__)
def test_every_protocol_method_exists_on_the_client_with_a_compatible_signature(protocol, cls):
    for name, member in protocol_members(protocol).items():
        implementation = inspect.getattr_static(cls, name, None)
        if isinstance(member, property):
            continue  # checked on live instances below (some are instance attributes)
        assert inspect.isfunction(implementation), f"{cls.__name__}.{name} is not a method"
        expected = inspect.signature(member)
        actual = inspect.signature(implementation)
        expected_hints = typing.get_type_hints(member)
        actual_hints = typing.get_type_hints(implementation)
        assert actual_hints.get("return") == expected_hints.get("return"), f"{cls.__name__}.{name} returns another type"
        actual_params = dict(actual.parameters)
        for param in expected.parameters.values():
            assert param.name in actual_params, f"{cls.__name__}.{name} lacks parameter {param.name}"
            got = actual_params.pop(param.name)
            assert got.kind == param.kind, f"{cls.__name__}.{name}({param.name}) is of another kind"
            assert got.default == param.default, f"{cls.__name__}.{name}({param.name}) has another default"
            if param.name in expected_hints:
                assert actual_hints.get(param.name) == expected_hints[param.name], (
                    f"{cls.__name__}.{name}({param.name})"
                )
        extra = [
            p.name for p in actual_params.values() if p.default is inspect.Parameter.empty and p.kind < p.VAR_POSITIONAL
        ]
        assert not extra, f"{cls.__name__}.{name} requires parameters the protocol does not pass: {extra}"


def check_properties(protocol: type, instance: object) -> None:
    for name, member in protocol_members(protocol).items():
        if not isinstance(member, property):
            continue
        expected = typing.get_type_hints(member.fget)["return"]
        assert isinstance(getattr(instance, name), expected), f"{type(instance).__name__}.{name} is not a {expected}"


def test_the_clients_satisfy_the_protocols(contracts: Deployed):
    for wallet in (None, Wallet.dev(0)):
        escrow, registry = contracts.escrow(wallet), contracts.registry(wallet)
        assert isinstance(escrow, EscrowBackend)
        assert isinstance(registry, RegistryBackend)
        check_properties(EscrowBackend, escrow)
        check_properties(RegistryBackend, registry)
    assert not isinstance(registry, EscrowBackend)
    assert not isinstance(escrow, RegistryBackend)


def test_a_chain_hands_out_backends(contracts: Deployed):
    w3 = contracts.chain.w3
    network = Network("http://127.0.0.1:1", w3.eth.chain_id, contracts.escrow_address, contracts.registry_address)
    chain = Chain(w3, network, Wallet.dev(0))
    assert isinstance(chain.escrow, EscrowBackend)
    assert isinstance(chain.registry, RegistryBackend)
    source = inspect.getsource(Chain.__init__)  # the attributes are typed with the protocols, not the clients
    assert "self.escrow: EscrowBackend" in source and "self.registry: RegistryBackend" in source


# A call on an escrow or registry client outside the chain package: ``chain.escrow.session(...)``,
# ``self.escrow.paid(...)``, ``escrow.claim(...)``. IPython's ``magics_manager.registry`` is another thing.
USE = re.compile(r"(?<!magics_manager\.)\b(escrow|registry)\.([A-Za-z]\w*)")
CLIENTS = {"escrow.py", "registry.py", "backends.py"}


def uses() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"escrow": set(), "registry": set()}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "chain" and path.name in CLIENTS:
            continue
        for what, name in USE.findall(path.read_text(encoding="utf-8")):
            found[what].add(name)
    return found


def test_the_protocols_cover_what_the_code_base_uses():
    used = uses()
    assert {"session", "settle_graph", "claim"} <= used["escrow"]  # the scan still finds the calls
    assert {"active_offers"} <= used["registry"]
    for what, protocol in (("escrow", EscrowBackend), ("registry", RegistryBackend)):
        missing = used[what] - set(protocol_members(protocol))
        assert not missing, f"the code base uses {sorted(missing)} of {what}: add them to {protocol.__name__}"


# ---------------------------------------------------------------------------- Solidity interfaces


def without_comments(source: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)


def declared(source: str) -> dict[str, set[str]]:
    """Names of the functions, events and errors declared in Solidity ``source``."""
    code = without_comments(source)
    return {kind: set(re.findall(rf"\b{kind}\s+(\w+)\s*\(", code)) for kind in ABI_KINDS}


def abi_names(contract: str) -> dict[str, set[str]]:
    abi = load_artifact(contract)["abi"]
    return {kind: {e["name"] for e in abi if e["type"] == kind} for kind in ABI_KINDS}


@pytest.mark.parametrize("contract", INTERFACES)
def test_the_contract_implements_its_interface(contract):
    interface, path = INTERFACES[contract]
    source = (CONTRACTS / f"{contract}.sol").read_text(encoding="utf-8")
    bases = re.search(rf"\bcontract\s+{contract}\s+is\s+([^{{]+)\{{", without_comments(source))
    assert bases, f"{contract} inherits from nothing"
    assert interface in [b.strip() for b in bases.group(1).split(",")]
    assert re.search(rf'import\s*\{{\s*{interface}\s*\}}\s*from\s*"\./interfaces/{interface}\.sol"', source)
    assert path in load_artifact(contract)["sources_sha256"], "run: node contracts/build.mjs"


@pytest.mark.parametrize("contract", INTERFACES)
def test_every_function_event_and_error_of_the_abi_is_declared_in_the_interface(contract):
    interface, path = INTERFACES[contract]
    source = (ROOT / path).read_text(encoding="utf-8")
    names = declared(source)
    header = re.search(rf"\binterface\s+{interface}\b([^{{]*)\{{", without_comments(source))
    assert header, f"{path} does not declare interface {interface}"
    bases = [b.strip() for b in header.group(1).removeprefix(" is").split(",") if b.strip()]
    inherited = set().union(*(INHERITED[b] for b in bases)) if bases else set()
    in_contract = without_comments((CONTRACTS / f"{contract}.sol").read_text(encoding="utf-8"))
    for kind, abi in abi_names(contract).items():
        for name in sorted(abi):
            if name in names[kind] or name in inherited:
                continue
            assert name in FROM_OPENZEPPELIN, f"{kind} {name} of {contract} is not declared in {path}"
            assert not re.search(rf"\b{kind}\s+{name}\s*\(", in_contract), f"{contract} declares {name} itself"
            library = NODE_MODULES / FROM_OPENZEPPELIN[name]
            if library.is_file():
                assert name in declared(library.read_text(encoding="utf-8"))[kind]
        # Nothing the interface declares is missing from the contract.
        assert names[kind] <= abi, f"{path} declares {sorted(names[kind] - abi)} that {contract} lacks"
    # Events and errors live in the interface only, not also in the contract.
    for kind in ("event", "error"):
        assert not re.findall(rf"\b{kind}\s+(\w+)\s*\(", in_contract), f"{contract} still declares {kind}s"


def test_the_sdist_ships_the_interfaces():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "contracts/interfaces/*.sol" in config["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


# Compiles the interfaces alone and prints {name: {abi, userdoc, devdoc}}.
COMPILE_INTERFACES = r"""
const [solcPath, root, ...files] = process.argv.slice(1);
const fs = require("fs"), path = require("path"), solc = require(solcPath);
const sources = Object.fromEntries(files.map((f) => [f, { content: fs.readFileSync(path.join(root, f), "utf8") }]));
const settings = { outputSelection: { "*": { "*": ["abi", "userdoc", "devdoc"] } } };
const find = (p) => {
  for (const f of [path.join(root, "contracts", "node_modules", p), path.join(root, p)])
    if (fs.existsSync(f)) return { contents: fs.readFileSync(f, "utf8") };
  return { error: "not found: " + p };
};
const out = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings }), { import: find }));
const ours = (e) => !(e.sourceLocation?.file || "").startsWith("@openzeppelin/");
const errors = (out.errors || []).filter((e) => e.severity === "error" || ours(e));
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join("\n")); process.exit(2); }
const result = {};
for (const f of files) Object.assign(result, out.contracts[f]);
console.log(JSON.stringify(result));
"""


@pytest.fixture(scope="module")
def compiled_interfaces() -> dict[str, dict]:
    node = shutil.which("node")
    solc = NODE_MODULES / "solc"
    if node is None or not solc.is_dir():
        missing = "node" if node is None else "contracts/node_modules/solc (npm install in contracts/)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is required under CI to compile the interfaces")
        pytest.skip(f"{missing} not installed")
    files = [path for _, path in INTERFACES.values()]
    result = subprocess.run(
        [node, "-e", COMPILE_INTERFACES, str(solc), str(ROOT), *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def signature(entry: dict) -> str:
    """An ABI entry as everything a client depends on, without the compiler's ``internalType``."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "internalType"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(entry), sort_keys=True)


@pytest.mark.parametrize("contract", INTERFACES)
def test_the_interface_abi_is_the_contract_abi(contract, compiled_interfaces):
    interface, _ = INTERFACES[contract]
    contract_abi = load_artifact(contract)["abi"]
    library_errors = {n for n, p in FROM_OPENZEPPELIN.items() if not p.endswith("IERC5267.sol")}
    expected = {signature(e) for e in contract_abi if e["type"] in ABI_KINDS and e.get("name") not in library_errors}
    actual = {signature(e) for e in compiled_interfaces[interface]["abi"]}
    assert actual == expected


def canonical(entry: dict) -> str:
    """``name(type,...)`` as NatSpec output keys it, tuples spelled out."""

    def kind(param: dict) -> str:
        if param["type"].startswith("tuple"):
            return "(" + ",".join(kind(c) for c in param["components"]) + ")" + param["type"][len("tuple") :]
        return param["type"]

    return f"{entry['name']}({','.join(kind(p) for p in entry['inputs'])})"


def first(doc: dict | list | None) -> dict:
    """Errors are documented as a list (they can be overloaded), functions and events as one object."""
    return (doc[0] if isinstance(doc, list) else doc) or {}


@pytest.mark.parametrize("contract", INTERFACES)
def test_every_interface_member_has_natspec(contract, compiled_interfaces):
    interface, _ = INTERFACES[contract]
    compiled = compiled_interfaces[interface]
    sections = {"function": "methods", "event": "events", "error": "errors"}
    for entry in compiled["abi"]:
        if entry["name"] in INHERITED["IERC5267"]:
            continue  # OpenZeppelin's, documented there
        kind, key = entry["type"], canonical(entry)
        user = first(compiled["userdoc"].get(sections[kind], {}).get(key))
        dev = first(compiled["devdoc"].get(sections[kind], {}).get(key))
        assert user.get("notice"), f"{interface}: {kind} {key} has no @notice"
        named = sorted(p["name"] for p in entry["inputs"] if p["name"])
        assert sorted(dev.get("params", {})) == named, f"{interface}: {kind} {key} lacks a @param"
        if kind == "function":
            assert len(dev.get("returns", {})) == len(entry["outputs"]), f"{interface}: {key} lacks a @return"
