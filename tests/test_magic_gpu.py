"""``%%golem --gpu`` on a GPU provider: CuPy inside the cell, NumPy in the notebook.

Runs only where CuPy finds an NVIDIA GPU (a provider refuses to offer GPUs it does not have);
elsewhere it is skipped, never faked.
"""

from __future__ import annotations

import numpy as np
import pytest
from magic_shell import text_shell
from marketkit import local_market

from golem_jupyter.provider.gpu import detect_gpus

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(detect_gpus().count == 0, reason="needs CuPy and an NVIDIA GPU"),
]


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    with text_shell() as ip:
        with local_market(tmp_path_factory.mktemp("gpu-market"), providers=2, gpu_providers=1) as market:
            ip.run_line_magic("golem", f"connect {market.home / 'devnet.json'} --providers 1 --budget 0.05")
            yield ip
            ip.run_line_magic("golem", "close")


def test_xp_is_cupy_on_the_gpu_worker_and_results_come_back_as_numpy(shell):
    shell.reset()
    shell.run_cell_magic(
        "golem",
        "--gpu",
        "a = xp.arange(1_000_000, dtype=xp.float64).reshape(1000, 1000)\n"
        "b = a @ a.T\n"
        "trace = float(xp.trace(b))\n"
        "module = type(a).__module__",
    )
    ns = shell.user_ns
    assert ns["module"].startswith("cupy")
    assert type(ns["a"]) is np.ndarray and type(ns["b"]) is np.ndarray
    expected = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    assert np.allclose(ns["b"], expected @ expected.T)
    assert ns["trace"] == pytest.approx(float(np.trace(expected @ expected.T)))


def test_dask_array_with_cupy_chunks_inside_a_gpu_cell(shell):
    shell.reset()
    shell.run_cell_magic(
        "golem",
        "--gpu",
        "import dask.array as da\n"
        "x = da.from_array(xp.ones((2000, 2000)), chunks=(500, 500), asarray=False)\n"
        "total = float((x * 2).sum().compute())\n"
        "chunk_type = type((x * 2).blocks[0, 0].compute()).__module__",
    )
    assert shell.user_ns["total"] == 2 * 2000 * 2000
    assert shell.user_ns["chunk_type"].startswith("cupy")


def test_gpu_tasks_are_charged_at_the_gpu_rate(shell):
    shell.reset()
    shell.run_cell_magic("golem", "--gpu", "s = float(xp.random.random((3000, 3000)).sum())")
    magics = shell.magics_manager.registry["GolemMagics"]
    graph = magics.gpu_market.cluster.graphs[-1]
    usage = next(iter(graph["payouts"].values()))
    assert usage["gpu_seconds"] > 0 and usage["cpu_seconds"] == 0
