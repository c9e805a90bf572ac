"""Which environment variables the scheduler process and an unconfined worker never inherit."""

from __future__ import annotations

import pytest

from golem_jupyter._environment import is_secret_name
from golem_jupyter.requestor.scheduler_process import scheduler_environment


@pytest.mark.parametrize(
    "name", ["GOLEM_KEYSTORE", "GOLEM_PRIVATE_KEY", "keystore_password", "DASK_API_TOKEN", "Wallet_Mnemonic", "SECRET"]
)
def test_names_that_may_hold_a_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "OMP_NUM_THREADS"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_the_scheduler_gets_its_allowlist_and_never_a_secret_even_an_allowlisted_one() -> None:
    environ = {"PATH": "/bin", "DASK_API_TOKEN": "t", "PYTHONPATH": "/x", "GOLEM_KEYSTORE": "/k", "EDITOR": "vi"}
    assert scheduler_environment(environ) == {"PATH": "/bin", "PYTHONPATH": "/x"}
