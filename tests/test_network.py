"""Finding and checking the chain (golem_jupyter.chain.network), and the JSON-RPC server of the devnet.

A real node for these tests: the embedded chain served over HTTP on 127.0.0.1 by ``RPCServer``,
with both contracts deployed through that HTTP endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import time
from collections.abc import Iterator

import pytest
import requests
from chainkit import free_port

from golem_jupyter.chain import Chain, Wallet
from golem_jupyter.chain.deploy import deploy
from golem_jupyter.chain.embedded import EmbeddedProvider
from golem_jupyter.chain.network import (
    DevAccount,
    Network,
    connect,
    deployments_file,
    record_deployment,
    resolve,
    web3_for,
)
from golem_jupyter.chain.rpc_server import RPCServer
from golem_jupyter.errors import ChainMismatch, ConfigurationError, NetworkUnreachable

NO_CODE = "0x000000000000000000000000000000000000dEaD"


@dataclasses.dataclass
class Node:
    server: RPCServer
    network: Network

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, body: bytes | str) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return requests.post(self.url, data=data, headers={"Content-Type": "application/json"}, timeout=10)

    def call(self, payload) -> object:
        response = self.post(json.dumps(payload))
        assert response.status_code == 200
        return response.json()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with RPCServer(EmbeddedProvider()) as server:
        network = deploy(web3_for(server.url), Wallet.dev(0).account, server.url, name="test")
        yield Node(server, network)


def block_number(node: Node) -> int:
    return web3_for(node.url).eth.block_number


def unreachable_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ---------------------------------------------------------------------------- resolve


def test_resolve_without_a_network_or_a_devnet_names_golem_devnet(golem_home):
    with pytest.raises(ConfigurationError) as raised:
        resolve(None)
    assert "`golem devnet`" in str(raised.value)
    assert str(golem_home / "devnet.json") in str(raised.value)


def test_chain_connect_without_a_network_or_a_devnet_names_golem_devnet():
    with pytest.raises(ConfigurationError, match="`golem devnet`"):
        Chain.connect()


def test_resolve_returns_a_network_as_it_is(node):
    assert resolve(node.network) is node.network


def test_resolve_a_url_without_a_recorded_deployment_suggests_golem_deploy(node):
    with pytest.raises(ConfigurationError) as raised:
        resolve(node.url)
    message = str(raised.value)
    assert f"`golem deploy --rpc-url {node.url}`" in message
    assert str(node.network.chain_id) in message


def test_resolve_a_url_after_record_deployment_gives_the_recorded_contracts(node):
    record_deployment(node.network)

    network = resolve(node.url)

    assert (network.rpc_url, network.chain_id, network.escrow, network.registry, network.deployed_at_block) == (
        node.url,
        node.network.chain_id,
        node.network.escrow,
        node.network.registry,
        node.network.deployed_at_block,
    )
    assert stat.S_IMODE(deployments_file().stat().st_mode) == 0o600
    chain = Chain.connect(node.url, Wallet.dev(1))
    assert chain.escrow.claim_window == 24 * 3600
    assert chain.registry.active_count() == 0


def test_a_recorded_deployment_is_found_under_another_url_of_the_same_chain(node):
    # The deployment is recorded per chain id; the URL used to reach the node is the one given now.
    record_deployment(dataclasses.replace(node.network, rpc_url="http://elsewhere.invalid:8545"))
    assert resolve(node.url).rpc_url == node.url


def test_record_deployment_keeps_other_chains(node):
    other = dataclasses.replace(node.network, chain_id=node.network.chain_id + 1, name="other")
    record_deployment(other)
    record_deployment(node.network)
    recorded = json.loads(deployments_file().read_text())
    assert set(recorded) == {str(node.network.chain_id), str(other.chain_id)}
    assert "accounts" not in recorded[str(node.network.chain_id)]


def test_a_damaged_deployments_file_is_a_configuration_error(node):
    deployments_file().write_text("{not json")
    with pytest.raises(ConfigurationError, match="damaged"):
        resolve(node.url)


def test_resolve_a_connection_file_by_path(node, tmp_path):
    path = tmp_path / "net.json"
    node.network.save(path)
    assert resolve(path) == node.network
    assert resolve(str(path)) == node.network


def test_resolve_reads_the_devnet_file_when_nothing_is_given(node, golem_home):
    node.network.save(golem_home / "devnet.json")
    assert resolve(None) == node.network
    assert Chain.connect().network == node.network


# ---------------------------------------------------------------------------- connect's checks


def test_an_unreachable_url_raises_network_unreachable_quickly():
    url = unreachable_url()
    network = Network(url, 31337, NO_CODE, NO_CODE)
    started = time.monotonic()
    with pytest.raises(NetworkUnreachable) as raised:
        connect(network)
    assert time.monotonic() - started < 5
    assert url in str(raised.value)
    assert "`golem devnet`" in str(raised.value)


def test_resolving_an_unreachable_url_raises_network_unreachable():
    url = unreachable_url()
    started = time.monotonic()
    with pytest.raises(NetworkUnreachable):
        resolve(url)
    with pytest.raises(NetworkUnreachable):
        Chain.connect(url)
    assert time.monotonic() - started < 5


def test_a_network_recorded_for_another_chain_id_raises_chain_mismatch_before_anything_is_sent(node):
    wrong = dataclasses.replace(node.network, chain_id=node.network.chain_id + 1)
    before = block_number(node)
    with pytest.raises(ChainMismatch) as raised:
        Chain.connect(wrong, Wallet.dev(0))
    message = str(raised.value)
    assert f"serves chain {node.network.chain_id}" in message
    assert f"chain {wrong.chain_id}" in message
    assert "nothing was sent" in message
    assert block_number(node) == before


def test_an_escrow_address_without_code_raises_chain_mismatch(node):
    with pytest.raises(ChainMismatch) as raised:
        connect(dataclasses.replace(node.network, escrow=NO_CODE))
    assert "GolemEscrow" in str(raised.value)
    assert NO_CODE in str(raised.value)


def test_a_registry_address_without_code_raises_chain_mismatch(node):
    with pytest.raises(ChainMismatch, match="ProviderRegistry"):
        connect(dataclasses.replace(node.network, registry=NO_CODE))


def test_connect_to_the_right_network_gives_a_working_web3(node):
    w3 = connect(node.network)
    assert w3.eth.chain_id == node.network.chain_id
    assert w3.eth.get_code(node.network.escrow)


# ---------------------------------------------------------------------------- connection files


def test_network_save_and_load_round_trip_with_an_owner_only_file(node, tmp_path):
    keys = [Wallet.dev(i).account.key.to_0x_hex() for i in (0, 1)]
    network = dataclasses.replace(
        node.network, name="devnet", pid=4242, accounts=tuple(DevAccount(Wallet.from_key(k).address, k) for k in keys)
    )
    path = tmp_path / "sub" / "devnet.json"

    network.save(path)

    assert Network.load(path) == network
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["devnet.json"]  # no temporary file left behind


def test_save_replaces_an_existing_file_and_keeps_it_owner_only(node, tmp_path):
    path = tmp_path / "devnet.json"
    path.write_text("old")
    path.chmod(0o644)
    node.network.save(path)
    assert Network.load(path) == node.network
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_dev_account_never_shows_its_key():
    key = Wallet.dev(3).account.key.to_0x_hex()
    account = DevAccount(Wallet.dev(3).address, key)
    network = Network("http://127.0.0.1:1", 1, NO_CODE, NO_CODE, accounts=(account,))
    assert key[2:] not in repr(account)
    assert key[2:] not in repr(network)


def test_loading_a_missing_connection_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="No connection file"):
        Network.load(tmp_path / "none.json")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "{}",
        '{"rpc_url": "http://x", "chain_id": "one", "escrow": "0x1", "registry": "0x2"}',
        json.dumps({"rpc_url": "http://x", "chain_id": 1, "escrow": "0x1234", "registry": NO_CODE}),
    ],
)
def test_loading_a_broken_connection_file_is_a_configuration_error(tmp_path, content):
    path = tmp_path / "net.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=r"net\.json"):
        Network.load(path)


# ---------------------------------------------------------------------------- the JSON-RPC server


def test_the_server_answers_a_json_rpc_request(node):
    answer = node.call({"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []})
    assert answer == {"jsonrpc": "2.0", "id": 7, "result": hex(node.network.chain_id)}


def test_a_body_that_is_not_json_gets_a_parse_error(node):
    response = node.post(b'{"jsonrpc": "2.0", "method": ')
    assert response.status_code == 200
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "parse error: body is not JSON"},
    }


def test_a_body_that_is_not_utf8_gets_a_parse_error(node):
    assert node.post(b"\xff\xfe\xfd").json()["error"]["code"] == -32700


def test_a_batch_gets_a_list_of_answers_in_order(node):
    answers = node.call(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": "two", "method": "eth_getBalance", "params": [Wallet.dev(5).address, "latest"]},
            {"jsonrpc": "2.0", "id": 3, "method": "no_such_method", "params": []},
            {"jsonrpc": "2.0", "id": 4, "method": "eth_getCode", "params": [node.network.escrow, "latest"]},
        ]
    )
    assert isinstance(answers, list)
    assert [a["id"] for a in answers] == [1, "two", 3, 4]
    assert answers[0]["result"] == hex(node.network.chain_id)
    assert int(answers[1]["result"], 16) == 10_000 * 10**18
    assert "error" in answers[2] and "result" not in answers[2]
    assert answers[3]["result"].startswith("0x") and len(answers[3]["result"]) > 2


def test_an_unknown_method_gets_an_error_and_the_server_keeps_serving(node):
    answer = node.call({"jsonrpc": "2.0", "id": 9, "method": "eth_noSuchThing", "params": []})
    assert answer["id"] == 9
    assert isinstance(answer["error"]["code"], int)
    assert "eth_noSuchThing" in answer["error"]["message"]
    assert "result" not in answer
    assert node.call({"jsonrpc": "2.0", "id": 10, "method": "eth_chainId", "params": []})["result"] == hex(
        node.network.chain_id
    )


@pytest.mark.parametrize(
    "request_object, code",
    [
        ({"jsonrpc": "2.0", "id": 1}, -32600),  # no method
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, -32600),  # method not a string
        ("eth_chainId", -32600),  # not an object
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": {}}, -32602),  # params not a list
    ],
)
def test_an_invalid_request_gets_its_error_code(node, request_object, code):
    answer = node.call(request_object)
    assert answer["error"]["code"] == code


def test_params_the_chain_cannot_use_get_an_error_and_the_server_keeps_serving(node):
    answer = node.call({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": ["not an address"]})
    assert "error" in answer
    assert web3_for(node.url).eth.chain_id == node.network.chain_id


def test_the_server_serves_concurrent_clients(node):
    from concurrent.futures import ThreadPoolExecutor

    def ask(i: int) -> object:
        return node.call(
            {"jsonrpc": "2.0", "id": i, "method": "eth_getBalance", "params": [Wallet.dev(i % 20).address, "latest"]}
        )["id"]

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(ask, range(40))) == list(range(40))


def test_a_stopped_server_is_unreachable():
    server = RPCServer(EmbeddedProvider()).start()
    url = server.url
    assert web3_for(url).eth.chain_id
    server.stop()
    with pytest.raises(NetworkUnreachable):
        resolve(url)
