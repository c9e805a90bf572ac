"""Wallets: encrypted keystores, keys from the environment, dev accounts, and keys never shown.

Keystores made by ``Wallet.create`` use scrypt at its full cost (about a second per encryption
or decryption), so only one test pays for it; the other ``load`` tests use keystore files
written with a cheap KDF, which ``Wallet.load`` reads the same way.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from golem_jupyter.chain import Wallet
from golem_jupyter.chain.wallet import KEY_ENV
from golem_jupyter.errors import ConfigurationError, GolemError, WrongPassword

PASSWORD = "correct horse battery staple"
KEY = "0x" + keccak(text="golem-jupyter wallet test key").hex()


def cheap_keystore(path: Path, key: str = KEY, password: str = PASSWORD) -> Path:
    """A real keystore file, encrypted with a tiny scrypt cost so that tests stay fast."""
    path.write_text(json.dumps(Account.encrypt(key, password, kdf="scrypt", iterations=16)))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_texts(key: str) -> list[str]:
    """Ways a key could leak into text: with and without 0x, in either case."""
    bare = key.removeprefix("0x")
    return [bare.lower(), bare.upper(), bare]


# ---------------------------------------------------------------------------- keystores


def test_create_writes_an_owner_only_keystore_under_golem_home_that_load_unlocks(golem_home):
    wallet = Wallet.create(PASSWORD)

    path = golem_home / "keystore" / f"{wallet.address}.json"
    assert path.is_file()
    assert mode(path) == 0o600
    assert mode(path.parent) & 0o077 == 0
    assert wallet.source == f"keystore {path}"
    keystore = json.loads(path.read_text())
    assert keystore["crypto"]["kdf"] == "scrypt"
    assert "0x" + keystore["address"].lower() == wallet.address.lower()
    key = wallet.account.key.hex()
    assert not any(text in path.read_text() for text in key_texts(key))

    loaded = Wallet.load(path, PASSWORD)
    assert loaded.address == wallet.address
    assert loaded.account.key == wallet.account.key


def test_create_refuses_an_empty_password(golem_home):
    with pytest.raises(ConfigurationError, match="password"):
        Wallet.create("")
    assert not any((golem_home / "keystore").glob("*.json"))


def test_create_refuses_to_overwrite_an_existing_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text("precious")
    with pytest.raises(ConfigurationError, match="already exists"):
        Wallet.create(PASSWORD, path)
    assert path.read_text() == "precious"


def test_load_with_the_right_password_gives_the_same_account(tmp_path):
    path = cheap_keystore(tmp_path / "k.json")
    wallet = Wallet.load(path, PASSWORD)
    assert wallet.address == Account.from_key(KEY).address
    assert wallet.source == f"keystore {path}"


def test_load_accepts_a_path_as_text(tmp_path):
    path = cheap_keystore(tmp_path / "k.json")
    assert Wallet.load(str(path), PASSWORD).address == Account.from_key(KEY).address


def test_load_with_a_wrong_password_raises_wrong_password(tmp_path):
    path = cheap_keystore(tmp_path / "k.json")
    with pytest.raises(WrongPassword) as raised:
        Wallet.load(path, "wrong password")
    assert str(path) in str(raised.value)
    assert "wrong password" not in str(raised.value)  # the attempt is not echoed
    assert isinstance(raised.value, GolemError)


def test_load_of_a_missing_file_raises_configuration_error(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(ConfigurationError) as raised:
        Wallet.load(path, PASSWORD)
    assert str(path) in str(raised.value)
    assert "golem wallet create" in str(raised.value)


@pytest.mark.parametrize("content", [b"not json at all", b"\xff\xfe\x00binary", b""])
def test_load_of_a_file_that_is_not_json_raises_configuration_error(tmp_path, content):
    path = tmp_path / "k.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="not a keystore file"):
        Wallet.load(path, PASSWORD)


@pytest.mark.parametrize("content", ["{}", "[]", '{"rpc_url": "http://127.0.0.1:8545", "chain_id": 1}', '"text"'])
def test_load_of_json_that_is_not_a_keystore_raises_configuration_error(tmp_path, content):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="keystore file"):
        Wallet.load(path, PASSWORD)


# ---------------------------------------------------------------------------- keys from the environment


def test_from_env_reads_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    wallet = Wallet.from_env()
    assert wallet.address == Account.from_key(KEY).address
    assert wallet.source == f"environment {KEY_ENV}"


def test_from_env_reads_another_variable_when_asked(monkeypatch):
    monkeypatch.setenv("MY_DEV_KEY", KEY)
    assert Wallet.from_env("MY_DEV_KEY").address == Account.from_key(KEY).address


@pytest.mark.parametrize("value", [None, ""])
def test_from_env_with_the_variable_unset_raises_configuration_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        Wallet.from_env()


@pytest.mark.parametrize(
    "bad_key",
    [
        KEY[:-2],  # 31 bytes
        KEY + "ab",  # 33 bytes
        KEY[:-4] + "zzzz",  # not hex
        "s3cret-passphrase-not-a-key",  # not a key at all
        "0x" + "00" * 32,  # zero is not a valid secp256k1 key
    ],
)
def test_from_env_with_a_malformed_key_does_not_echo_it(monkeypatch, bad_key):
    monkeypatch.setenv(KEY_ENV, bad_key)
    with pytest.raises(ConfigurationError) as raised:
        Wallet.from_env()
    message = str(raised.value)
    assert KEY_ENV in message
    assert all(text not in message for text in key_texts(bad_key))
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained error shows it


def test_from_key_refuses_a_non_string_without_showing_it():
    with pytest.raises(ConfigurationError):
        Wallet.from_key(12345)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the key is never shown


def test_repr_and_str_never_contain_the_private_key(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, KEY)
    wallets = [
        Wallet.from_key(KEY),
        Wallet.from_env(),
        Wallet.load(cheap_keystore(tmp_path / "k.json"), PASSWORD),
        Wallet.dev(0),
        Wallet.dev(19),
    ]
    for wallet in wallets:
        key = wallet.account.key.hex()
        for shown in (repr(wallet), str(wallet), f"{wallet}", repr([wallet]), repr({"w": wallet})):
            assert wallet.address in shown
            assert all(text not in shown for text in key_texts(key))


# ---------------------------------------------------------------------------- dev accounts


def test_dev_accounts_are_the_well_known_development_addresses():
    assert Wallet.dev(0).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert Wallet.dev().address == Wallet.dev(0).address
    assert Wallet.dev(1).address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert Wallet.dev(19).address == "0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199"
    assert Wallet.dev(0).source == "devnet account 0"
