"""Wallets: an account key held in this process, loaded from an encrypted keystore file,
an environment variable (for development), or the devnet's dev accounts.

A wallet never shows its key: not in ``repr``, not in logs, not in a notebook's output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ..errors import ConfigurationError, WrongPassword
from ..home import golem_home

KEY_ENV = "GOLEM_PRIVATE_KEY"
PASSWORD_ENV = "GOLEM_WALLET_PASSWORD"


def keystore_dir() -> Path:
    path = golem_home() / "keystore"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class Wallet:
    """An account whose key is held in memory for signing."""

    def __init__(self, account: LocalAccount, source: str = "key") -> None:
        self.account = account
        self.source = source
        """Where the key came from: 'keystore PATH', 'environment', 'devnet', 'key', 'new'."""

    @property
    def address(self) -> str:
        return self.account.address

    def __repr__(self) -> str:
        return f"Wallet({self.address}, from {self.source})"

    @classmethod
    def create(cls, password: str, path: Path | None = None) -> Wallet:
        """Make a new key and save it encrypted with ``password`` (file mode 0600)."""
        if not password:
            raise ConfigurationError("A new wallet needs a non-empty password to encrypt its keystore.")
        account = Account.create()
        path = Path(path) if path else keystore_dir() / f"{account.address}.json"
        if path.exists():
            raise ConfigurationError(f"{path} already exists; choose another path.")
        keystore = Account.encrypt(account.key, password)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keystore, f)
        return cls(account, f"keystore {path}")

    @classmethod
    def load(cls, path: Path | str, password: str) -> Wallet:
        """Decrypt the keystore file at ``path``."""
        path = Path(path).expanduser()
        try:
            keystore = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"No keystore file at {path}; create one with `golem wallet create`.") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigurationError(f"{path} is not a keystore file (it is not JSON).") from None
        try:
            key = Account.decrypt(keystore, password)
        except ValueError as error:
            if "MAC mismatch" in str(error):
                raise WrongPassword(f"Wrong password for the keystore {path}; nothing was unlocked.") from None
            raise ConfigurationError(f"{path} is not a valid keystore file: {error}") from None
        except (KeyError, TypeError):  # JSON, but not a keystore (e.g. {}, a list, another golem file)
            raise ConfigurationError(f"{path} is not a keystore file (it is JSON, but holds no key).") from None
        return cls(Account.from_key(key), f"keystore {path}")

    @classmethod
    def from_key(cls, private_key: str, source: str = "key") -> Wallet:
        try:
            return cls(Account.from_key(private_key), source)
        except (ValueError, TypeError):
            # The message must not echo the key.
            raise ConfigurationError(f"The private key from {source} is not a valid 32-byte hex key.") from None

    @classmethod
    def from_env(cls, variable: str = KEY_ENV) -> Wallet:
        """The key in environment variable ``variable`` (development only: prefer keystores)."""
        key = os.environ.get(variable)
        if not key:
            raise ConfigurationError(f"Environment variable {variable} is not set.")
        return cls.from_key(key, f"environment {variable}")

    @classmethod
    def dev(cls, index: int = 0) -> Wallet:
        """Development account ``index``: funded on the devnet and on anvil."""
        from .embedded import dev_key

        return cls.from_key(dev_key(index), f"devnet account {index}")


def default_wallet(network) -> Wallet:
    """The wallet a requestor uses when given none: ``$GOLEM_PRIVATE_KEY``, else a devnet's account 0.

    ``GolemCluster``, ``golem sessions`` and the side panel all pick it this way, so they act for the
    same wallet.
    """
    if os.environ.get(KEY_ENV):
        return Wallet.from_env()
    if network.accounts:
        return Wallet.from_key(network.accounts[0].private_key, "devnet account 0")
    raise ConfigurationError(
        f"No wallet given: pass wallet=Wallet.load(...) or set {KEY_ENV}. Only a devnet comes with funded accounts."
    )
