"""Which environment variables may hold a secret, for the processes that must not inherit one.

The scheduler process (DESIGN.md section 6: it holds no key) and a provider's unconfined worker
(requestors' code runs in it) get environments with such variables left out, whatever else they
are given: a wallet key, a keystore password or an API token is named like one almost always.
"""

from __future__ import annotations

SECRET_WORDS = ("KEY", "PASSWORD", "SECRET", "TOKEN", "MNEMONIC", "KEYSTORE")
"""A variable whose name contains one of these (in any case) is taken for a secret."""


def is_secret_name(name: str) -> bool:
    """Whether the environment variable ``name`` may hold a secret (``GOLEM_KEYSTORE``, ``api_token``)."""
    return any(word in name.upper() for word in SECRET_WORDS)
