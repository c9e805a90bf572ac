"""``%%golem`` in a real Jupyter kernel: widgets on iopub, and interrupting a running graph.

The kernel is an ipykernel process started with jupyter_client, connected to a devnet market
started by the test; messages are read from its channels as a frontend would.
"""

from __future__ import annotations

import os
import queue
import time

import pytest
from jupyter_client.manager import start_new_kernel
from marketkit import assert_paid_as_metered, local_market, wait_until

from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    with local_market(tmp_path_factory.mktemp("kernel-market"), providers=2) as market:
        yield market


@pytest.fixture(scope="module")
def kernel(market):
    saved = os.environ.pop("GOLEM_DISPLAY", None)  # the kernel chooses widgets by itself
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        run(client, "%load_ext golem_jupyter")
        run(client, f"%golem connect {market.home / 'devnet.json'} --providers 2 --budget 0.05")
        yield manager, client
    finally:
        try:
            run(client, "%golem close", timeout=120)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
            if saved is not None:
                os.environ["GOLEM_DISPLAY"] = saved


def run(client, code: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """Execute ``code``; the reply and every iopub message of that execution."""
    msg_id = client.execute(code)
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle status for {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return reply, messages


def stdout_of(messages: list[dict]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def value_of(client, expression: str) -> str:
    reply, messages = run(client, f"print(repr({expression}))")
    assert reply["content"]["status"] == "ok", reply["content"]
    return stdout_of(messages).strip()


def test_a_cell_shows_progress_and_receipt_widgets(kernel):
    _, client = kernel
    reply, messages = run(client, "%%golem\ntotals = [sum(range(5000 * (i + 1))) for i in range(16)]")
    assert reply["content"]["status"] == "ok", reply["content"]
    displayed = [m for m in messages if m["msg_type"] == "display_data"]
    assert any(WIDGET_VIEW in m["content"]["data"] for m in displayed)
    states = [m["content"]["data"] for m in messages if m["msg_type"] in ("comm_open", "comm_msg")]
    receipt_html = "".join(str(d) for d in states)
    assert "0x" in receipt_html  # provider addresses and the graph id in the receipt widget
    assert value_of(client, "totals[3]") == repr(sum(range(20000)))


def finished_on_the_providers(market) -> int:
    """Tasks the market's providers have finished, as their own meters count."""
    return sum(read_meter(meter)["tasks"] for meter in market.home.glob("provider/*/agreements/*/meter.json"))


def test_interrupt_cancels_the_graph_and_settles_what_ran(kernel, market):
    """Interrupting the kernel cancels the running graph and writes nothing back; what ran is
    settled, each provider paid what its own meter says; the kernel is still usable."""
    manager, client = kernel
    run(client, "import time")
    before = finished_on_the_providers(market)
    msg_id = client.execute("%%golem\nslow = [time.sleep(0.5) or i for i in range(60)]")
    # The graph is running on the providers: both have finished some of its naps.
    wait_until(lambda: finished_on_the_providers(market) >= before + 4, 120, "the providers have run some naps")
    manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=120)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert value_of(client, "'slow' in globals()") == "False"
    # What ran before the interrupt is paid: the graph is in the ledger and settles.
    reply, _ = run(client, "%golem status")
    assert reply["content"]["status"] == "ok"
    ledger = market.ledger()
    [session] = ledger.sessions()  # the kernel's, in the market's GOLEM_HOME
    paid = [
        assert_paid_as_metered(market, session.session_id, a.provider) for a in ledger.agreements(session.session_id)
    ]
    assert len(paid) == 2 and all(paid)
    # The kernel is still usable.
    reply, _ = run(client, "%%golem\nafter = 40 + 2")
    assert reply["content"]["status"] == "ok"
    assert value_of(client, "after") == "42"
