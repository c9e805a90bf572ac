"""``notebooks/verify.ipynb`` as a user runs it: ``golem run --network`` on a devnet with a liar.

The devnet has three providers; the last lies on every task (``golem devnet --providers 3 --liars 1
--lie-fraction 1``) and asks the lowest price, so the notebook's ``%golem connect --providers 2
--verify 0.5`` rents it and the cheaper honest provider. Every checked task runs on both, so the
liar escapes the first ``%%golem`` cell (32 tasks) with probability 0.5 ** 32 (2e-10): it is caught
there, reported on-chain, recorded in the run's ledger, dropped, and replaced by the third
provider, and every value the notebook prints is right.
"""

from __future__ import annotations

import re

import pytest
from marketkit import Market, local_market
from test_batch import NOTEBOOKS, TX, cell_with, code_cells, golem_run, read, single_run, text_of

from golem_jupyter.ledger import Ledger

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("verify-notebook")
    with local_market(home, providers=3, liars=1, lie_fraction=1.0) as market:
        yield market


def test_the_verify_notebook_catches_the_liar_and_replaces_it(market: Market, tmp_path) -> None:
    cheaper, third, liar = market.providers  # the liar is the last agent, priced below both others
    assert liar.liar and not cheaper.liar and not third.liar
    assert liar.price_per_cpu_second < cheaper.price_per_cpu_second < third.price_per_cpu_second
    home = tmp_path / "home"  # the run's $GOLEM_HOME: its ledger, apart from the market's
    home.mkdir()
    network = str(market.home / "devnet.json")
    result = golem_run(home, str(NOTEBOOKS / "verify.ipynb"), "--network", network, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    nb = read(tmp_path / "verify.out.ipynb")
    assert all(c.metadata.papermill["status"] == "completed" for c in code_cells(nb))
    assert "escapes this cell: (1 - 0.5) ** 32 = 2.3e-10" in text_of(cell_with(nb, "Chance that"))
    first_cell = f"In [{cell_with(nb, 'steps = [collatz_steps').execution_count}]"
    checked = text_of(cell_with(nb, "expected = [collatz_steps"))
    assert "32 values came back; all of them right: True" in checked
    assert "n = 27 takes 111 steps" in checked
    assert "16 eigenvalues came back; all of them right: True" in text_of(cell_with(nb, "here = ["))

    status = text_of(cell_with(nb, "%golem status"))
    [line] = [line for line in status.splitlines() if line.strip().startswith("reported ")]
    assert liar.address in line and "paid nothing for that graph; dropped and replaced" in line
    tx_hash = re.search(r"reportFault tx (0x[0-9a-f]{64})", line).group(1)
    assert f"providers now: {cheaper.address} (serving), {third.address} (serving)" in status
    assert "2 providers serve the session" in text_of(cell_with(nb, "wait_for_workers"))
    assert re.search(r"verified: \d+ task\(s\) checked at --verify 0.5, [1-9]\d* mismatch", status)
    python = text_of(cell_with(nb, "cluster.faults"))
    assert f"caught {liar.address}: reportFault transaction {tx_hash}" in python
    assert f"serving now: {cheaper.address}, {third.address}" in python
    assert "(reported by you)" in text_of(cell_with(nb, "%golem providers"))

    # On-chain: one FaultReported, against the liar, in the run's session, by that transaction.
    run = single_run(home)
    assert (run.status, run.exit_code) == ("succeeded", 0)
    with Ledger(home / "ledger.sqlite") as ledger:
        [session] = ledger.sessions(run_id=run.run_id)
        [event] = market.chain().escrow.events("FaultReported")
        assert event["provider"] == liar.address and event["tx_hash"] == tx_hash
        assert "0x" + event["sessionId"].hex() == session.session_id
        # The run's ledger has the fault, and the liar is not rented again by it.
        [fault] = ledger.faults()
        assert (fault.provider, fault.tx_hash, fault.session_id) == (liar.address, tx_hash, session.session_id)
        assert fault.graph_id == "0x" + event["graphId"].hex()
        assert ledger.graph(fault.graph_id).label == first_cell  # caught in the first %%golem cell
        assert ledger.reported_providers() == {liar.address}
        # Replaced: the third provider was rented in the same session; the liar's agreement failed.
        agreements = {a.provider: a for a in ledger.agreements(session.session_id)}
        assert set(agreements) == {cheaper.address, third.address, liar.address}
        assert agreements[liar.address].status == "failed" and "reported" in agreements[liar.address].reason
        # The graph the liar was caught in pays it nothing; every settlement is confirmed.
        graphs = ledger.graphs(session_id=session.session_id)
        [caught] = [g for g in graphs if g.graph_id == fault.graph_id]
        assert liar.address not in {p.provider for p in caught.payouts}
        assert all(g.status == "confirmed" and TX.fullmatch(g.tx_hash) for g in graphs if g.payouts)
        assert third.address in {p.provider for g in graphs for p in g.payouts}  # the replacement did work
