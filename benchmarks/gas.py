"""Gas used by each GolemEscrow operation, against the goals of the foundation issue.

    python benchmarks/gas.py            # embedded chain
    python benchmarks/gas.py --anvil    # the same on an anvil node (gas must be identical)

Goals for settleGraph with N providers:
  a later graph of a session         <= 45,000 + 25,000 * N
  the first graph of a session       <= 45,000 + 35,000 * N   (new per-session storage)

"First graph" is measured for providers that were paid before in another session (their
escrow account already exists), which is the steady state of a market; the very first payment
a provider ever receives also creates its account and is printed separately for reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eth_account import Account
from web3 import Web3

from golem_jupyter.chain import Escrow, Wallet
from golem_jupyter.chain.deploy import deploy_contract
from golem_jupyter.chain.embedded import EmbeddedProvider
from golem_jupyter.chain.transactions import Transactor
from golem_jupyter.chain.types import new_id

CLAIM_WINDOW = 3600
SIZES = (1, 4, 16)


def later_goal(n: int) -> int:
    return 45_000 + 25_000 * n


def first_goal(n: int) -> int:
    return 45_000 + 35_000 * n


def measure(w3: Web3, travel) -> list[tuple[str, int, int | None]]:
    requestor = Wallet.dev(0)
    escrow_address, _ = deploy_contract(w3, requestor.account, "GolemEscrow", CLAIM_WINDOW)
    escrow = Escrow(w3, escrow_address, requestor.account)
    # Providers are fresh keys, funded for the gas of their claim and withdraw.
    providers = [Account.create() for _ in range(max(SIZES))]
    funder = Transactor(w3, requestor.account)
    for p in providers[:1]:
        funder.send(to=p.address, value=10**17)

    def deadline() -> int:
        return w3.eth.get_block("latest").timestamp + 600

    rows: list[tuple[str, int, int | None]] = []
    warmup = new_id()
    opened = escrow.open_session(warmup, 10**18, deadline())
    rows.append(("openSession (native currency)", opened.gas_used, None))

    everyone = {p.address: 1_000 for p in providers}
    brand_new = escrow.settle_graph(warmup, new_id(), everyone, new_id())
    for n in SIZES:
        payouts = {p.address: 1_000 for p in providers[:n]}
        session = new_id()
        escrow.open_session(session, 10**18, deadline())
        first = escrow.settle_graph(session, new_id(), payouts, new_id())
        later = escrow.settle_graph(session, new_id(), payouts, new_id())
        rows.append((f"settleGraph, first graph, {n:>2} providers", first.gas_used, first_goal(n)))
        rows.append((f"settleGraph, later graph, {n:>2} providers", later.gas_used, later_goal(n)))
    rows.append((f"settleGraph, {len(everyone)} providers never paid before", brand_new.gas_used, None))

    session = new_id()
    escrow.open_session(session, 10**18, deadline())
    provider = Escrow(w3, escrow_address, providers[0])
    claimed = provider.claim(escrow.sign_voucher(session, providers[0].address, 5_000))
    rows.append(("claim (voucher)", claimed.gas_used, None))
    withdrawn = provider.withdraw()
    rows.append(("withdraw (native currency)", withdrawn.gas_used, None))
    travel(w3.eth.get_block("latest").timestamp + 600 + CLAIM_WINDOW + 1)
    closed = escrow.close_session(session)
    rows.append(("closeSession (with refund)", closed.gas_used, None))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anvil", action="store_true", help="measure on an anvil node instead")
    args = parser.parse_args()

    if args.anvil:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from chainkit import anvil_binary, anvil_chain

        binary = anvil_binary()
        if binary is None:
            parser.error("anvil not found: run `npm install` in contracts/")
        chain = anvil_chain(binary)
        w3, where = chain.w3, "anvil"
    else:
        chain = None
        w3, where = Web3(EmbeddedProvider()), "embedded EVM"

    def travel(timestamp: int) -> None:
        w3.manager.request_blocking("evm_setNextBlockTimestamp", [hex(timestamp)])
        w3.manager.request_blocking("evm_mine", [])

    try:
        rows = measure(w3, travel)
    finally:
        if chain is not None:
            chain.close()

    print(f"GolemEscrow gas on the {where}")
    print(f"{'operation':<48}{'gas':>10}{'goal':>10}  ratio  met")
    missed = 0
    for name, gas, goal in rows:
        if goal is None:
            print(f"{name:<48}{gas:>10,}{'':>10}")
            continue
        met = gas <= goal
        missed += not met
        print(f"{name:<48}{gas:>10,}{goal:>10,}  {gas / goal:5.2f}  {'yes' if met else 'NO'}")
    print(f"\n{missed} goal(s) missed" if missed else "\nall goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
