"""Gas used by each GolemEscrow (version 2) operation, against the goals of DESIGN.md section 3.

    python benchmarks/gas.py              # the embedded chain, then anvil if it is installed
    python benchmarks/gas.py --embedded   # only the embedded chain
    python benchmarks/gas.py --anvil      # only anvil (gas must be identical)

Goals, N providers:

  allocate                                   <= 32,000 + 25,500 * N
  settleGraph, every graph (the first too)   <= 40,000 + 13,500 * N
  settleGraph paying N providers for the     <= 40,000 + 13,500 * N + 20,000 * N
    first time ever (their escrow accounts are created)
  release, final amount already paid         <= 45,000
  release that still credits the provider    <= 55,000
  closeSession, cooperative, with a refund   <= 45,000

Amounts are realistic (about 10^12 wei: several non-zero calldata bytes each). Providers, session
and graph ids are derived from a counter, so both chains use the same gas (only signatures, which
depend on the chain id, may differ in a few calldata bytes). The requestor is the devnet's first
account. Operations without a goal are printed for reference.
"""

from __future__ import annotations

import argparse
import sys
from itertools import count
from pathlib import Path

from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from golem_jupyter.chain import Escrow, Wallet
from golem_jupyter.chain.deploy import deploy_contract
from golem_jupyter.chain.embedded import EmbeddedProvider
from golem_jupyter.chain.transactions import Transactor

CLAIM_WINDOW = 3600
SIZES = (1, 4, 16)
DEPOSIT = 10**18
ALLOCATION = 10**15
AMOUNT = 1_234_567_890_123


def allocate_goal(n: int) -> int:
    return 32_000 + 25_500 * n


def settle_goal(n: int) -> int:
    return 40_000 + 13_500 * n


def first_ever_goal(n: int) -> int:
    return settle_goal(n) + 20_000 * n


Row = tuple[str, int, int | None]


def measure(w3: Web3, travel) -> list[Row]:
    counter = count(1)

    def new_id() -> bytes:
        return keccak(text=f"golem gas benchmark {next(counter)}")

    def new_account():
        return Account.from_key(new_id())

    requestor = Wallet.dev(0)
    escrow_address, _ = deploy_contract(w3, requestor.account, "GolemEscrow", CLAIM_WINDOW)
    escrow = Escrow(w3, escrow_address, requestor.account)

    def deadline() -> int:
        return w3.eth.get_block("latest").timestamp + 600

    def open_session() -> tuple[bytes, int]:
        session = new_id()
        return session, escrow.open_session(session, DEPOSIT, deadline()).gas_used

    rows: list[Row] = []
    _, opened = open_session()
    rows.append(("openSession (native currency)", opened, None))

    for n in SIZES:
        providers = [new_account().address for _ in range(n)]
        # A session in which these providers are paid for the first time ever.
        first, _ = open_session()
        allocated = escrow.allocate(first, {p: ALLOCATION for p in providers})
        rows.append((f"allocate, {n:>2} providers", allocated.gas_used, allocate_goal(n)))
        payouts = {p: AMOUNT for p in providers}
        brand_new = escrow.settle_graph(first, 0, new_id(), payouts, new_id())
        rows.append((f"settleGraph, {n:>2} providers paid the first time ever", brand_new.gas_used, first_ever_goal(n)))
        # A new session of the same providers: its first graph, then a later one.
        session, _ = open_session()
        escrow.allocate(session, {p: ALLOCATION for p in providers})
        first_graph = escrow.settle_graph(session, 0, new_id(), payouts, new_id())
        later_graph = escrow.settle_graph(session, 1, new_id(), payouts, new_id())
        rows.append((f"settleGraph, first graph, {n:>2} providers", first_graph.gas_used, settle_goal(n)))
        rows.append((f"settleGraph, later graph, {n:>2} providers", later_graph.gas_used, settle_goal(n)))

    # One provider, paid before; it signs releases and pays gas only for its own claim and withdraw.
    provider = new_account()
    Transactor(w3, requestor.account).send(to=provider.address, value=10**17)
    as_provider = Escrow(w3, escrow_address, provider)
    warm, _ = open_session()
    escrow.allocate(warm, {provider.address: ALLOCATION})
    escrow.settle_graph(warm, 0, new_id(), {provider.address: AMOUNT})

    cooperative, _ = open_session()
    escrow.allocate(cooperative, {provider.address: ALLOCATION})
    escrow.settle_graph(cooperative, 0, new_id(), {provider.address: AMOUNT})
    released = escrow.release(as_provider.sign_release(cooperative, AMOUNT))
    rows.append(("release, final amount already paid", released.gas_used, 45_000))
    closed = escrow.close_session(cooperative)
    rows.append(("closeSession, cooperative, with refund", closed.gas_used, 45_000))

    crediting, _ = open_session()
    escrow.allocate(crediting, {provider.address: ALLOCATION})
    escrow.settle_graph(crediting, 0, new_id(), {provider.address: AMOUNT})
    released = escrow.release(as_provider.sign_release(crediting, 2 * AMOUNT))
    rows.append(("release that still credits the provider", released.gas_used, 55_000))

    claimed_session, _ = open_session()
    escrow.allocate(claimed_session, {provider.address: ALLOCATION})
    claimed = as_provider.claim(escrow.sign_voucher(claimed_session, provider.address, AMOUNT))
    rows.append(("claim (voucher)", claimed.gas_used, None))
    withdrawn = as_provider.withdraw()
    rows.append(("withdraw (native currency)", withdrawn.gas_used, None))
    reclaimed = escrow.reclaim(claimed_session)
    rows.append(("reclaim (unallocated remainder)", reclaimed.gas_used, None))
    travel(w3.eth.get_block("latest").timestamp + 600 + CLAIM_WINDOW + 1)
    unilateral = escrow.close_session(claimed_session)
    rows.append(("closeSession after the claim window", unilateral.gas_used, None))
    return rows


def run_on(where: str) -> tuple[str, list[Row]]:
    if where == "anvil":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from chainkit import anvil_binary, anvil_chain

        binary = anvil_binary()
        if binary is None:
            raise SystemExit("anvil not found: run `npm install` in contracts/")
        chain = anvil_chain(binary)
        w3 = chain.w3
    else:
        chain = None
        w3 = Web3(EmbeddedProvider())

    def travel(timestamp: int) -> None:
        w3.manager.request_blocking("evm_setNextBlockTimestamp", [hex(timestamp)])
        w3.manager.request_blocking("evm_mine", [])

    try:
        return ("anvil" if chain else "embedded EVM"), measure(w3, travel)
    finally:
        if chain is not None:
            chain.close()


def print_table(where: str, rows: list[Row]) -> int:
    print(f"GolemEscrow gas on the {where}")
    print(f"{'operation':<52}{'gas':>10}{'goal':>10}  ratio  met")
    missed = 0
    for name, gas, goal in rows:
        if goal is None:
            print(f"{name:<52}{gas:>10,}{'':>10}")
            continue
        met = gas <= goal
        missed += not met
        print(f"{name:<52}{gas:>10,}{goal:>10,}  {gas / goal:5.2f}  {'yes' if met else 'NO'}")
    print(f"{missed} goal(s) missed\n" if missed else "all goals met\n")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--anvil", action="store_true", help="measure on an anvil node only")
    only.add_argument("--embedded", action="store_true", help="measure on the embedded chain only")
    args = parser.parse_args()

    chains = ["anvil"] if args.anvil else ["embedded"] if args.embedded else ["embedded", "anvil"]
    tables = []
    for where in chains:
        if where == "anvil" and not args.anvil:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from chainkit import anvil_binary

            if anvil_binary() is None:
                print("anvil not installed (npm install in contracts/): measured on the embedded chain only\n")
                continue
        tables.append(run_on(where))
    missed = sum(print_table(where, rows) for where, rows in tables)
    if len(tables) == 2:
        # Signatures (releases, vouchers) depend on the chain id, so their zero bytes, and the
        # calldata's cost (4 gas per zero byte, 16 per other), may differ a little; nothing else may.
        differences = {name: abs(a - b) for (name, a, _), (_, b, _) in zip(tables[0][1], tables[1][1], strict=True)}
        worst = max(differences.values())
        print(f"largest difference between the two chains: {worst} gas")
        if worst > 12 * 16:
            missed += 1
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
