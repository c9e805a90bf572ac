"""The market end to end: a devnet with 3 provider agents, GolemClusters renting them, real
graphs metered and settled on-chain, and the chain, the ledger and the providers' meters
agreeing on who earned what. Everything runs as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import dask.array as da
import pytest
from distributed import Client
from market_tasks import nap, square
from marketkit import (
    Market,
    assert_paid_as_metered,
    local_market,
    session_agreements,
    session_ca_pem,
    wait_until,
)

from golem_jupyter.chain import Wallet
from golem_jupyter.chain.escrow import Allocation
from golem_jupyter.chain.vouchers import sign_release
from golem_jupyter.cli import main as cli_main
from golem_jupyter.errors import BudgetExceeded, InvalidInput, MarketError
from golem_jupyter.market.certificates import SessionCA
from golem_jupyter.provider.agreements import PaymentPolicy
from golem_jupyter.requestor.cluster import GolemCluster
from golem_jupyter.requestor.negotiation import ProviderUnreachable
from golem_jupyter.worker.meter import read_meter

pytestmark = pytest.mark.timeout(300)

BUDGET = 10**17


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    with local_market(tmp_path_factory.mktemp("market")) as market:
        yield market


def rent(market: Market, n: int = 2, **options) -> GolemCluster:
    options.setdefault("budget", BUDGET)
    return GolemCluster(n_providers=n, network=market.network, ledger=market.ledger(), **options)


def test_devnet_lists_three_providers_with_offers(market: Market) -> None:
    chain = market.chain()
    offers = {o.provider: o for o in chain.registry.active_offers()}
    assert len(market.providers) == 3
    for provider in market.providers:
        offer = offers[provider.address]
        assert offer.endpoint == provider.endpoint
        assert offer.price_per_cpu_second == provider.price_per_cpu_second
    prices = [p.price_per_cpu_second for p in market.providers]
    assert len(set(prices)) == 3


def test_cluster_rents_the_two_cheapest_runs_graphs_and_everyone_agrees(market: Market) -> None:
    cheapest = sorted(market.providers, key=lambda p: p.price_per_cpu_second)[:2]
    with rent(market) as cluster, Client(cluster) as client:
        assert set(cluster.rentals) == {p.address for p in cheapest}
        names = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
        assert names == {p.address for p in cheapest}

        results = client.gather(client.map(square, range(1000)))
        assert results == [x * x for x in range(1000)]
        x = da.arange(200_000, chunks=10_000)
        assert int((x * 2).sum().compute()) == 2 * sum(range(200_000))
        assert cluster.wait_for_settlement(60)
        session_id = cluster.session_id
        html = cluster._repr_html_()
        assert "spent" in html and cheapest[0].address in html

    chain = market.chain()
    ledger = market.ledger()
    graphs = ledger.graphs(session_id=session_id)
    assert len(graphs) >= 2
    assert all(g.status == "confirmed" and g.tx_hash for g in graphs)
    settled = chain.escrow.events("GraphSettled", sessionId=session_id)
    assert sorted(e["graphId"].hex() for e in settled) == sorted(g.graph_id[2:] for g in graphs)  # each once
    paid_events = chain.escrow.events("Paid", sessionId=session_id)
    for provider in cluster.rentals:
        ledger_total = ledger.provider_totals(session_id).get(provider, 0)
        chain_total = sum(e["amount"] for e in paid_events if e["provider"] == provider)
        assert chain_total == ledger_total == chain.escrow.paid(session_id, provider)
        # ... and each was paid what its own meter says it computed, at its own prices.
        assert assert_paid_as_metered(market, session_id, provider) == chain_total > 0
    assert ledger.session(session_id).spent == sum(e["amount"] for e in paid_events)


def requestor_costs(chain, address: str, from_block: int) -> int:
    """Gas ``address`` paid for its transactions mined since ``from_block``."""
    cost = 0
    for number in range(from_block, chain.w3.eth.block_number + 1):
        for tx in chain.w3.eth.get_block(number, full_transactions=True).transactions:
            if tx["from"] == address:
                receipt = chain.w3.eth.get_transaction_receipt(tx["hash"])
                cost += receipt.gasUsed * receipt.effectiveGasPrice
    return cost


def test_closing_the_cluster_releases_every_allocation_and_refunds_the_rest_within_seconds(market: Market) -> None:
    """Each rented provider was allocated its share before any task reached it, and confirmed it;
    closing the cluster settles what ran, each provider signs its release at its last voucher, and
    the session is closed at once: the requestor's wallet gets the deposit less what was paid (and
    the gas of the close), the ledger says closed with that refund, and chain, ledger and every
    provider's own meter agree on what each earned."""
    chain = market.chain()
    requestor = Wallet.dev(0).address
    with rent(market) as cluster, Client(cluster) as client:
        session_id = cluster.session_id
        providers = set(cluster.rentals)
        for provider in providers:  # allocated and confirmed before the first task
            allocation = chain.escrow.allocation(session_id, provider)
            assert allocation.allocated >= BUDGET // 10 and not allocation.released
            assert len(chain.escrow.events("Allocated", sessionId=session_id, provider=provider)) == 1
            assert market.meter(provider, session_id)["tasks"] == 0
        assert chain.escrow.session(session_id).open_allocations == 2
        assert client.gather(client.map(square, range(200))) == [x * x for x in range(200)]
        assert cluster.wait_for_settlement(60)
        before = chain.w3.eth.get_balance(requestor)
        start_block = chain.w3.eth.block_number + 1
        started = time.monotonic()
    closing_took = time.monotonic() - started
    assert "closed" in cluster.close_note and "back in the wallet" in cluster.close_note, cluster.close_note

    state = chain.escrow.session(session_id)
    assert state.closed and state.open_allocations == 0
    [closed] = chain.escrow.events("SessionClosed", sessionId=session_id)
    assert closed["refund"] == BUDGET - state.paid_out > 0
    assert chain.w3.eth.get_balance(requestor) == before + closed["refund"] - requestor_costs(
        chain, requestor, start_block
    )
    assert closing_took < 10, f"closing took {closing_took:.1f} s"
    record = market.ledger().session(session_id)
    assert (record.status, record.refund, record.close_tx) == ("closed", closed["refund"], closed["tx_hash"])
    released = {e["provider"]: e for e in chain.escrow.events("Released", sessionId=session_id)}
    assert set(released) == providers
    for provider in providers:
        paid = assert_paid_as_metered(market, session_id, provider)
        assert chain.escrow.allocation(session_id, provider) == Allocation(paid, paid, True)
        assert released[provider]["finalAmount"] == paid
    assert record.settled == state.paid_out


@pytest.mark.parametrize("answer", ["silence", "a release of another session", "a release for more"])
def test_a_provider_that_does_not_release_locks_only_its_own_allocation(market: Market, answer: str) -> None:
    """One of the two providers gives no usable release: it does not answer, or it answers with a
    release it genuinely signed, but for another session (its release of an earlier one, say) or
    for more than it earned. It keeps its allocation (and its claim window), the other releases,
    and everything else of the deposit is reclaimed at once; the ledger says the session is
    closing, with what came back."""
    chain = market.chain()
    requestor = Wallet.dev(0).address
    with rent(market) as cluster, Client(cluster) as client:
        assert client.gather(client.map(square, range(50))) == [x * x for x in range(50)]
        assert cluster.wait_for_settlement(60)
        session_id = cluster.session_id
        holdout, other = sorted(cluster.rentals)
        negotiator = cluster.payments.negotiator
        ask = negotiator.request

        key = next(w for w in map(Wallet.dev, range(10)) if w.address == holdout).account  # the provider's own

        async def holdout_answers(endpoint: str, provider: str, kind: str, body: dict) -> object:
            if kind != "release" or provider != holdout:
                return await ask(endpoint, provider, kind, body)
            if answer == "silence":
                raise ProviderUnreachable(f"Provider {provider} at {endpoint} did not answer (test).")
            final = body["finalAmount"]
            release = (
                sign_release(key, chain.escrow.domain, os.urandom(32), final)
                if answer == "a release of another session"
                else sign_release(key, chain.escrow.domain, session_id, final + 1)
            )
            reply = {"agreementId": body["agreementId"], "finalAmount": final, "signature": release.signature}
            return SimpleNamespace(kind="released", sender=holdout, body=reply)  # as the negotiator verified it

        negotiator.request = holdout_answers
        before = chain.w3.eth.get_balance(requestor)
        start_block = chain.w3.eth.block_number + 1
    assert holdout in cluster.close_note and "claim window" in cluster.close_note, cluster.close_note
    state = chain.escrow.session(session_id)
    kept = chain.escrow.allocation(session_id, holdout)
    assert not state.closed and state.open_allocations == 1 and not kept.released
    assert chain.escrow.allocation(session_id, other).released
    [reclaimed] = chain.escrow.events("Reclaimed", sessionId=session_id)
    assert state.unallocated == 0 and state.remaining == state.locked == kept.available > 0
    assert reclaimed["amount"] == BUDGET - state.paid_out - kept.available
    cost = requestor_costs(chain, requestor, start_block)
    assert chain.w3.eth.get_balance(requestor) == before + reclaimed["amount"] - cost
    record = market.ledger().session(session_id)
    assert (record.status, record.refund, record.close_tx) == ("closing", reclaimed["amount"], reclaimed["tx_hash"])
    for provider in (holdout, other):
        assert assert_paid_as_metered(market, session_id, provider) > 0


def session_ca_file(cluster: GolemCluster, directory: Path) -> Path:
    """The session CA's certificate (no secret: every party of the session gets it), as a file."""
    path = directory / "session-ca.pem"
    path.write_text(session_ca_pem(cluster))
    return path


def test_a_worker_without_the_session_certificate_cannot_join(market: Market, tmp_path: Path) -> None:
    """A real ``dask worker`` that trusts the session's CA but holds a certificate from another CA
    tries to join the session's scheduler, and is refused in the TLS handshake. Its own log shows
    that it reached the scheduler's address over TLS, again and again, without ever being let in,
    until it gave up and exited with an error; all that time the scheduler never listed it and the
    rented provider's worker stayed. The same certificate, offered to the scheduler directly, gets
    the TLS alert that refuses it."""
    credentials = SessionCA.create("someone else").write_credentials(tmp_path / "intruder", "intruder")
    log = tmp_path / "intruder.log"
    with rent(market, 1) as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        honest = set(cluster.rentals)
        command = [
            sys.executable, "-m", "distributed.cli.dask_worker", address,
            "--name", "intruder", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--nthreads", "1",
            "--death-timeout", "5s",  # gives up (exit code 1) when it cannot register within 5 s
            "--tls-ca-file", str(session_ca_file(cluster, tmp_path)),
            "--tls-cert", str(credentials.cert_file),
            "--tls-key", str(credentials.key_file),
        ]  # fmt: skip
        env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "debug"}  # it logs each TLS connection it opens
        with log.open("wb") as out:
            worker = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        polls = 0

        def intruder_gave_up() -> bool:
            nonlocal polls
            names = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
            assert names == honest, f"the scheduler listed {names} while the intruder was trying"
            polls += 1
            return worker.poll() is not None

        try:
            wait_until(intruder_gave_up, 120, "the intruder gives up and exits", interval=0.1)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        text = log.read_text()
        assert worker.returncode != 0, text[-3000:]
        assert "Timed out starting worker" in text, text[-3000:]
        assert f"TLS connection with '{address}'" in text, text[-3000:]  # it got through to the scheduler's TLS
        assert len(re.findall(rf"Waiting to connect to: +{re.escape(address)}\n", text)) >= 3, text[-3000:]
        assert polls > 1  # the scheduler's workers were checked while the intruder tried

        # The scheduler's TLS layer is what refused it: the same certificate gets an alert.
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(session_ca_file(cluster, tmp_path)))
        context.check_hostname = False
        context.load_cert_chain(str(credentials.cert_file), str(credentials.key_file))
        with socket.create_connection((host, int(port)), timeout=30) as raw, pytest.raises(ssl.SSLError, match="alert"):
            with context.wrap_socket(raw) as tls:  # TLS 1.3: the server judges the client's certificate after this
                tls.recv(1)
        assert {str(w["name"]) for w in client.scheduler_info()["workers"].values()} == honest


def test_a_provider_above_max_price_is_never_contacted(market: Market) -> None:
    cheapest, *expensive = sorted(market.providers, key=lambda p: p.price_per_cpu_second)
    logs_before = {p.address: len(market.log(p)) for p in expensive}
    with pytest.raises(MarketError, match=r"only 1 of the 3 offers"):
        rent(market, 2, max_price_cpu=cheapest.price_per_cpu_second)
    with rent(market, 1, max_price_cpu=cheapest.price_per_cpu_second) as cluster:
        assert list(cluster.rentals) == [cheapest.address]
        session = cluster.session_id.hex()
    for provider in expensive:
        assert session not in market.log(provider)[logs_before[provider.address] :]


def test_a_session_with_too_little_deposit_is_refused(market: Market) -> None:
    with pytest.raises(MarketError, match=r"refused \(INSUFFICIENT_DEPOSIT\)"):
        rent(market, 1, budget=1)


def test_a_budget_of_zero_is_refused_at_once(market: Market) -> None:
    with pytest.raises(InvalidInput, match="budget of 0"):
        rent(market, 1, budget=0)


def test_budget_guard_cancels_the_rest_settles_what_ran(market: Market) -> None:
    """The session's budget is spent: the rest of the graph is cancelled, and what ran is settled as
    exactly what the provider metered, as far as the deposit (the budget) goes: the naps that were
    already running when the guard fired still finish, and may take the meter past it."""
    price = min(p.price_per_cpu_second for p in market.providers)
    budget = int(price * 1.5)  # a CPU-second and a half at the cheapest price
    with rent(market, 1, budget=budget, max_price_cpu=price) as cluster, Client(cluster) as client:
        [provider] = cluster.rentals
        futures = client.map(nap, [0.05] * 100, pure=False)
        with pytest.raises(BudgetExceeded, match="budget is spent"):
            client.gather(futures)
        assert cluster.wait_for_settlement(60)
        assert cluster.budget_exceeded
        session_id = cluster.session_id
    paid = assert_paid_as_metered(market, session_id, provider, cap=budget)
    chain = market.chain()
    state = chain.escrow.session(session_id)
    assert 0 < state.paid_out == paid <= budget
    ledger = market.ledger()
    assert ledger.session(session_id).settled == state.paid_out


def test_a_task_still_running_when_the_guard_fires_is_paid_as_the_provider_metered(market: Market) -> None:
    """The guard fails a running task at once, but the worker cannot stop it: it finishes, and the
    provider's meter counts it. Its late report is billed too (a graph of its own), so the bill
    equals the provider's meter, the provider is not underpaid, and it goes on serving."""
    price = min(p.price_per_cpu_second for p in market.providers)
    with rent(market, 1, max_price_cpu=price) as cluster, Client(cluster) as client:
        [provider] = cluster.rentals
        cluster.cap_next_graphs(price // 2)  # half a CPU-second: the guard fires after the first nap
        futures = client.map(nap, [0.5] * 12, pure=False)
        with pytest.raises(BudgetExceeded, match="budget"):
            client.gather(futures)
        # The erred futures stay held, so the worker's report comes while the scheduler keeps the
        # tasks as erred: the case where Dask drops the report.
        session_id = cluster.session_id
        wait_until(lambda: market.meter(provider, session_id)["tasks"] >= 2, 30, "the provider metered a second nap")
        # The late nap is settled as a graph of its own: chain, ledger and voucher pay what the meter says.
        assert assert_paid_as_metered(market, session_id, provider) > 0

        # Let the provider sit idle past its grace for an idle, underpaid agreement, as its own
        # meter tells (the idle time between two timestamps its worker wrote, not this process's clock).
        [agreement] = session_agreements(market.home, provider, session_id)
        meter_file = agreement / "meter.json"
        grace = PaymentPolicy().grace + 1  # and a second for the agent's check (every 0.25 s) to come round

        def idle_past_grace() -> bool:
            meter = read_meter(meter_file)
            return meter["executing"] == 0 and meter_file.stat().st_mtime - meter["last_change"] > grace

        wait_until(idle_past_grace, 60, "the provider's meter says it has been idle past its grace")
        cluster.cap_next_graphs(None)
        assert client.submit(square, 7).result(timeout=60) == 49
        assert cluster.wait_for_settlement(60)
    agent = next(p for p in market.providers if p.address == provider)
    assert "stopped serving" not in market.log(agent)


def test_providers_claim_their_vouchers_when_the_requestor_is_killed(market: Market, tmp_path: Path) -> None:
    """The requestor dies after a graph, before settling it: each provider claims its voucher."""
    script = tmp_path / "requestor.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from distributed import Client
            import by_value  # tests/ task functions travel by value (a sandboxed worker cannot import them)
            from market_tasks import busy
            from golem_jupyter.chain import Network
            from golem_jupyter.ledger import Ledger
            from golem_jupyter.requestor import settlement
            from golem_jupyter.requestor.cluster import GolemCluster

            settlement.Settler.submit = lambda self, graph_id: None  # dies before settling
            network = Network.load({str(market.home / "devnet.json")!r})
            cluster = GolemCluster(n_providers=2, budget={BUDGET}, network=network, quiet=True,
                                   ledger=Ledger({str(market.home / "ledger.sqlite")!r}))
            client = Client(cluster)
            client.gather(client.map(busy, range(300)))
            while not cluster.graphs:
                time.sleep(0.05)
            cluster.sync(cluster.payments.vouchers_sent)
            print("SESSION 0x" + cluster.session_id.hex(), flush=True)
            time.sleep(600)
            """
        )
    )
    requestor = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        session_hex = requestor.stdout.readline().strip().removeprefix("SESSION ")
        assert session_hex.startswith("0x"), "the requestor script failed"
    finally:
        requestor.kill()
        requestor.wait()
    ledger = market.ledger()
    [graph] = ledger.graphs(session_id=session_hex)
    assert graph.status == "pending"
    chain = market.chain()
    promised = {p.provider: p.cumulative for p in graph.payouts}

    def claimed() -> bool:
        return {p: chain.escrow.paid(session_hex, p) for p in promised} == promised

    wait_until(claimed, 60, f"each provider has claimed its voucher ({promised})", interval=0.5)
    claims = chain.escrow.events("Claimed", sessionId=session_hex)
    assert {c["provider"]: c["amount"] for c in claims} == promised


def test_golem_sessions_lists_and_closes_what_a_killed_requestor_left(
    market: Market, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel dies after its graphs were settled, before closing: its session stays open with
    both providers' allocations. `golem sessions` lists it; `golem sessions close` gets each
    provider's release at its last voucher (the ledger has them) and closes the session
    cooperatively: the rest of the deposit is back in the wallet now, and each provider was paid
    exactly its vouchers."""
    script = tmp_path / "requestor.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from distributed import Client
            import by_value  # tests/ task functions travel by value (a sandboxed worker cannot import them)
            from market_tasks import busy
            from golem_jupyter.chain import Network
            from golem_jupyter.ledger import Ledger
            from golem_jupyter.requestor.cluster import GolemCluster

            network = Network.load({str(market.home / "devnet.json")!r})
            cluster = GolemCluster(n_providers=2, budget={BUDGET}, network=network, quiet=True,
                                   ledger=Ledger({str(market.home / "ledger.sqlite")!r}))
            client = Client(cluster)
            client.gather(client.map(busy, range(200)))
            assert cluster.wait_for_settlement(120)
            cluster.sync(cluster.payments.vouchers_sent)
            print("SESSION 0x" + cluster.session_id.hex(), flush=True)
            time.sleep(600)
            """
        )
    )
    requestor = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        session_hex = requestor.stdout.readline().strip().removeprefix("SESSION ")
        assert session_hex.startswith("0x"), "the requestor script failed"
    finally:
        requestor.kill()
        requestor.wait()
    chain = market.chain()
    ledger = market.ledger()
    promised = {a.provider: ledger.last_cumulative(session_hex, a.provider) for a in ledger.agreements(session_hex)}
    assert len(promised) == 2 and all(promised.values())
    state = chain.escrow.session(session_hex)
    assert not state.closed and state.open_allocations == 2
    network = ["--network", str(market.home / "devnet.json")]
    monkeypatch.setenv("GOLEM_HOME", str(market.home))  # where the ledger is

    assert cli_main(["sessions", *network]) == 0
    listing = capsys.readouterr().out
    [row] = [line for line in listing.splitlines() if line.strip().startswith(session_hex[:12])]
    assert " open " in row and "now if 2 provider(s) release" in row, listing

    requestor_address = Wallet.dev(0).address
    before = chain.w3.eth.get_balance(requestor_address)
    assert cli_main(["sessions", "close", session_hex[:14], *network]) == 0
    out = capsys.readouterr().out
    assert "closed" in out and "is back in the wallet" in out, out

    state = chain.escrow.session(session_hex)
    assert state.closed
    for provider, amount in promised.items():
        allocation = chain.escrow.allocation(session_hex, provider)
        assert allocation.released and allocation.paid == amount, (provider, allocation, amount)
    refund = state.deposited - state.paid_out
    assert state.paid_out == sum(promised.values())
    [closed] = chain.escrow.events("SessionClosed", sessionId=session_hex)
    assert closed["refund"] + state.reclaimed == refund
    gas_paid = chain.w3.eth.get_balance(requestor_address) - before - closed["refund"]  # only its own gas
    assert gas_paid <= 0
    record = ledger.session(session_hex)
    assert record.status == "closed" and record.refund == refund and record.close_tx

    assert cli_main(["sessions", *network]) == 0
    assert session_hex[:12] not in capsys.readouterr().out  # closed ones only with --all
    assert cli_main(["sessions", "--all", "--wei", *network]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(session_hex[:12])]
    assert "closed" in row and f"{refund} wei" in row
