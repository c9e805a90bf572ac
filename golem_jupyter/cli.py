"""The ``golem`` command."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigurationError, GolemError

WEI_PER_ETH = 10**18


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except GolemError as error:
        print(f"golem: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="golem", description="Notebook cells as work for a decentralized market.")
    commands = parser.add_subparsers(title="commands")

    devnet = commands.add_parser(
        "devnet",
        help="run a local chain with the contracts deployed",
        description="Run the embedded chain on 127.0.0.1 with both contracts deployed "
        "and dev accounts funded, until Ctrl-C or `golem devnet stop`.",
    )
    devnet.add_argument(
        "action",
        nargs="?",
        choices=["start", "stop", "status"],
        default="start",
        help="start (default, runs in the foreground), stop a running one, or show its status",
    )
    devnet.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    devnet.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default 8545; 0 picks a free one)")
    devnet.add_argument(
        "--claim-window",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds after a session's deadline during which providers may claim (default 1 day)",
    )
    devnet.add_argument("--providers", type=int, default=0, metavar="N", help="also start N provider agents")
    devnet.add_argument(
        "--gpu-providers", type=int, default=0, metavar="M", help="of those, M offer a GPU (needs one here)"
    )
    devnet.add_argument(
        "--liars",
        type=int,
        default=0,
        metavar="N",
        help="of those, the last N LIE: their workers return wrong values for some tasks (to test --verify); "
        "they ask the lowest prices, so requestors rent them first",
    )
    devnet.add_argument(
        "--lie-fraction",
        type=float,
        default=None,
        metavar="F",
        help="the fraction of tasks a liar corrupts (default 0.5)",
    )
    devnet.set_defaults(run=_devnet)

    deploy = commands.add_parser(
        "deploy",
        help="deploy the contracts to a JSON-RPC node and record them",
        description="Deploy GolemEscrow and ProviderRegistry with your wallet and record "
        "them for the node's chain id in $GOLEM_HOME/deployments.json.",
    )
    deploy.add_argument("--rpc-url", required=True, help="JSON-RPC URL of the node")
    deploy.add_argument("--claim-window", type=int, default=None, metavar="SECONDS")
    _wallet_options(deploy)
    deploy.set_defaults(run=_deploy)

    wallet = commands.add_parser("wallet", help="create or inspect a wallet")
    wallet_commands = wallet.add_subparsers(title="wallet commands")
    create = wallet_commands.add_parser("create", help="create a new key in an encrypted keystore file")
    create.add_argument("--path", help="where to write the keystore (default $GOLEM_HOME/keystore/ADDRESS.json)")
    create.set_defaults(run=_wallet_create)
    show = wallet_commands.add_parser("show", help="show a wallet's address and balances")
    _wallet_options(show)
    show.add_argument("--network", help="JSON-RPC URL or connection file (default: the running devnet)")
    show.set_defaults(run=_wallet_show)

    provider = commands.add_parser("provider", help="rent this machine out on the market")
    provider_commands = provider.add_subparsers(title="provider commands")
    run = provider_commands.add_parser(
        "run",
        help="publish an offer and serve workers until Ctrl-C",
        description="Publish (or update) this provider's offer in the ProviderRegistry, answer "
        "negotiation requests, and start one Dask worker per agreement. Amounts are like 1gwei (a bare number is wei).",
    )
    _wallet_options(run, password_file=True)
    run.add_argument("--network", help="JSON-RPC URL or connection file (default: the running devnet)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=0, help="negotiation port (default 0: a free one)")
    run.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run requestors' code unconfined (only where bubblewrap cannot run; the offer says so)",
    )
    run.add_argument("--price-cpu", type=_wei, default=10**9, metavar="X", help="price per CPU-second (1gwei)")
    run.add_argument("--price-gpu", type=_wei, default=10**10, metavar="X", help="price per GPU-second (10gwei)")
    run.add_argument("--start-fee", type=_wei, default=0, metavar="X", help="fee per agreement")
    run.add_argument("--cpus", type=int, default=1, help="threads per worker (default 1)")
    run.add_argument("--gpus", type=int, default=None, help="GPUs to offer (default: what CuPy finds)")
    run.add_argument("--memory", type=int, default=None, metavar="BYTES", help="memory limit per worker")
    run.add_argument("--max-agreements", type=int, default=4, help="sessions served at once (default 4)")
    run.add_argument("--tolerance", type=float, default=0.02, help="underpayment tolerated (fraction, default 0.02)")
    run.add_argument("--max-unpaid", type=_wei, default=10**16, metavar="X", help="unpaid work that stops serving")
    run.add_argument("--claim-grace", type=float, default=3.0, metavar="SECONDS")
    run.add_argument(
        "--min-deposit-seconds",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a session's deposit must cover this much compute at your price (default 10)",
    )
    run.add_argument("--withdraw-offer", action="store_true", help="take the offer off the market on exit")
    run.add_argument("--ready-file", help=argparse.SUPPRESS)
    run.set_defaults(run=_provider_run)

    _run_parser(commands)
    _ledger_parser(commands)
    _sessions_parser(commands)
    return parser


def _run_parser(commands) -> None:
    from .batch import exit_codes_help

    run = commands.add_parser(
        "run",
        help="execute a notebook, its %%%%golem cells on the market, and print the bill",
        description="Execute NOTEBOOK with papermill in a new kernel (the Golem kernel unless the notebook or "
        "--kernel names another). With no --network, an embedded market (a local chain and provider agents) is "
        "started for the run and stopped after it. The executed notebook is written even when a cell fails, with "
        "the error at the top; then the cost of each cell (graphs, providers, compute-seconds, amount, "
        "transaction) is printed and the run is recorded in the ledger.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("notebook", type=Path, help="the notebook to execute (.ipynb)")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable); VALUE is read as True/False/None, an int, a float or text",
    )
    run.add_argument("-f", "--parameters-file", type=Path, metavar="FILE", help="parameters from a YAML file (-p wins)")
    run.add_argument("-o", "--output", type=Path, help="where to write the executed notebook (default NAME.out.ipynb)")
    run.add_argument("--network", help="JSON-RPC URL or connection file (default: an embedded market for this run)")
    run.add_argument("--budget", metavar="X", help="the most the notebook may spend in all (0.01, 0.01eth, 5gwei)")
    run.add_argument(
        "--verify",
        type=float,
        metavar="F",
        help="check a fraction F of every cell's tasks by running them again on another provider (default 0)",
    )
    run.add_argument("--kernel", metavar="NAME", help="kernel to run (default: the notebook's, or golem-python)")
    run.add_argument("--timeout", type=float, metavar="S", help="interrupt a cell running longer than S seconds")
    run.add_argument("--cwd", type=Path, metavar="DIR", help="the kernel's working directory (default: the notebook's)")
    run.add_argument("--providers", type=int, default=2, metavar="N", help="embedded market: provider agents (2)")
    run.add_argument(
        "--gpu-providers", type=int, default=None, metavar="M", help="embedded market: of those, M with a GPU "
        "(default: 1 if this machine has an NVIDIA GPU CuPy can use, else 0)",
    )  # fmt: skip
    run.set_defaults(run=_run)


def _ledger_parser(commands) -> None:
    ledger = commands.add_parser("ledger", help="what the ledger recorded: runs, sessions and faults")
    ledger.add_argument(
        "what",
        nargs="?",
        choices=["runs", "sessions", "faults"],
        default="runs",
        help="runs (default); sessions; faults: providers verification outvoted, which are not rented again",
    )
    ledger.add_argument("--limit", type=int, default=20, metavar="N", help="newest N (default 20)")
    ledger.set_defaults(run=_ledger)


def _sessions_parser(commands) -> None:
    sessions = commands.add_parser(
        "sessions",
        help="your escrow sessions: what each holds, and close them",
        description="List the wallet's escrow sessions on the network (the ones the ledger recorded): deposited, "
        "paid, still allocated to providers, refundable now, and when the rest can be closed. `golem sessions close "
        "ID` asks each provider that holds an allocation for its signed release and closes the session, so the "
        "deposit's remainder is back at once; a provider that does not release keeps its allocation until the claim "
        "window ends, and everything else is reclaimed now.",
    )
    sessions.add_argument(
        "action", nargs="?", choices=["list", "close"], default="list", help="list (default) or close"
    )
    sessions.add_argument("session", nargs="?", metavar="ID", help="the session to close: 0x… or a unique prefix")
    sessions.add_argument("--network", help="JSON-RPC URL or connection file (default: $GOLEM_NETWORK or the devnet)")
    sessions.add_argument("--all", action="store_true", help="list closed sessions too")
    sessions.add_argument("--wei", action="store_true", help="amounts in exact wei")
    _wallet_options(sessions)
    sessions.set_defaults(run=_sessions)


def _wei(text: str) -> int:
    """An amount option: ``1gwei``, ``0.001eth`` or a number of wei."""
    from .amounts import parse_amount

    try:
        return parse_amount(text, "wei")
    except GolemError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _wallet_options(parser: argparse.ArgumentParser, *, password_file: bool = False) -> None:
    if password_file:
        parser.add_argument("--keystore", help="keystore file (password from --password-file or a prompt)")
        parser.add_argument(
            "--password-file", type=Path, metavar="FILE", help="read the keystore's password from FILE (mode 0600)"
        )
    else:
        parser.add_argument("--keystore", help="keystore file (password from $GOLEM_WALLET_PASSWORD or a prompt)")
    parser.add_argument(
        "--dev-account", type=int, metavar="N", help="use development account N (devnet and anvil only)"
    )


def _load_wallet(args: argparse.Namespace):
    from .chain.wallet import KEY_ENV, PASSWORD_ENV, Wallet

    if getattr(args, "password_file", None) and not args.keystore:
        raise ConfigurationError("--password-file goes with --keystore.")
    if args.keystore:
        if hasattr(args, "password_file"):  # the provider agent: never a secret in its environment
            password = _provider_password(args.keystore, args.password_file)
        else:
            password = os.environ.get(PASSWORD_ENV)
            if password is None:
                password = getpass.getpass(f"Password for {args.keystore}: ")
        return Wallet.load(args.keystore, password)
    if args.dev_account is not None:
        return Wallet.dev(args.dev_account)
    if os.environ.get(KEY_ENV):
        return Wallet.from_env()
    raise ConfigurationError(f"No wallet given: pass --keystore PATH, --dev-account N, or set {KEY_ENV}.")


def _provider_password(keystore: str, password_file: Path | None) -> str:
    """The keystore password of a provider agent: from a file or a prompt, never the environment.

    The agent's children run requestors' code; whatever is in the agent's environment, a child
    started without a sandbox inherits, and ``/proc/PID/environ`` keeps it for the agent's life."""
    from .chain.wallet import PASSWORD_ENV

    if os.environ.get(PASSWORD_ENV) is not None:
        raise ConfigurationError(
            f"The provider agent does not read ${PASSWORD_ENV}: its environment is what requestors' code could "
            "see. Unset it and pass --password-file FILE (readable only by you), or type the password at the prompt."
        )
    if password_file is None:
        return getpass.getpass(f"Password for {keystore}: ")
    try:
        text = password_file.read_text()
    except OSError as error:
        raise ConfigurationError(f"Cannot read the password file {password_file}: {error.strerror}.") from None
    if password_file.stat().st_mode & 0o077:
        print(f"golem: warning: {password_file} is readable by others; chmod 600 it.", file=sys.stderr)
    return text.rstrip("\r\n")


def _devnet(args: argparse.Namespace) -> int:
    from .devnet import Devnet, running_devnet, running_providers, serve_until_signalled, stop_devnet

    if args.action == "stop":
        stopped = stop_devnet()
        print(f"Stopped the devnet at {stopped.rpc_url}." if stopped else "No devnet is running.")
        return 0
    if args.action == "status":
        network = running_devnet()
        if network is None:
            print("No devnet is running. Start one with `golem devnet`.")
            return 3
        _print_network(network)
        _print_providers(running_providers())
        return 0

    from .chain.deploy import DEFAULT_CLAIM_WINDOW
    from .home import devnet_file

    devnet = Devnet(
        args.host,
        args.port,
        claim_window=args.claim_window or DEFAULT_CLAIM_WINDOW,
        providers=args.providers,
        gpu_providers=args.gpu_providers,
        liars=args.liars,
        **({"lie_fraction": args.lie_fraction} if args.lie_fraction is not None else {}),
    )

    def ready(network) -> None:
        _print_network(network)
        _print_providers(devnet.provider_agents)
        print(f"Connection file: {devnet_file()}")
        print("Press Ctrl-C or run `golem devnet stop` to stop.", flush=True)

    serve_until_signalled(devnet, ready)
    print("Devnet stopped.")
    return 0


def _print_network(network) -> None:
    print(f"Devnet running at {network.rpc_url} (chain id {network.chain_id}, pid {network.pid})")
    print(f"  GolemEscrow       {network.escrow}")
    print(f"  ProviderRegistry  {network.registry}")
    if network.accounts:
        print(f"  Dev accounts      {len(network.accounts)} funded, e.g. {network.accounts[0].address}")


def _print_providers(providers) -> None:
    if not providers:
        return
    print(f"  Providers         {len(providers)}")
    for p in providers:
        gpu = f", {p.gpus} GPU at {p.price_per_gpu_second} wei/s" if p.gpus else ""
        liar = f"  LIAR (devnet): wrong values for {p.lie_fraction:.0%} of tasks" if p.liar else ""
        print(f"    {p.address} at {p.endpoint} (pid {p.pid}): {p.price_per_cpu_second} wei per CPU-second{gpu}{liar}")


def _deploy(args: argparse.Namespace) -> int:
    from .chain.deploy import DEFAULT_CLAIM_WINDOW, deploy
    from .chain.network import chain_id_at, record_deployment, web3_for

    wallet = _load_wallet(args)
    w3 = web3_for(args.rpc_url)
    chain_id_at(w3, args.rpc_url)  # a clear error if nothing answers
    network = deploy(w3, wallet.account, args.rpc_url, claim_window=args.claim_window or DEFAULT_CLAIM_WINDOW)
    record_deployment(network)
    print(f"Deployed on chain {network.chain_id}:")
    print(f"  GolemEscrow       {network.escrow}")
    print(f"  ProviderRegistry  {network.registry}")
    return 0


def _wallet_create(args: argparse.Namespace) -> int:
    from .chain.wallet import PASSWORD_ENV, Wallet

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass("Password for the new keystore: ")
        if password != getpass.getpass("Repeat the password: "):
            raise ConfigurationError("The passwords differ; nothing was written.")
    wallet = Wallet.create(password, args.path)
    print(f"Created {wallet.address}")
    print(f"Keystore: {wallet.source.removeprefix('keystore ')}")
    return 0


def _wallet_show(args: argparse.Namespace) -> int:
    from .chain import Chain

    wallet = _load_wallet(args)
    print(f"Address: {wallet.address}")
    chain = Chain.connect(args.network, wallet)
    balance = chain.w3.eth.get_balance(wallet.address)
    credited = chain.escrow.balance_of(wallet.address)
    print(f"Balance on chain {chain.network.chain_id}: {balance / WEI_PER_ETH:.6f} ETH")
    print(f"Credited in escrow, not withdrawn: {credited} wei")
    return 0


def _provider_run(args: argparse.Namespace, *, lie_fraction: float | None = None) -> int:
    """``golem provider run``; ``lie_fraction`` only from the devnet's liars (provider._devnet_liar)."""
    import logging
    from pathlib import Path

    import trio

    from .provider.agent import ProviderAgent, ProviderConfig
    from .provider.agreements import PaymentPolicy
    from .provider.sandbox import default_sandbox, require_sandbox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    sandbox = "none" if args.no_sandbox else default_sandbox()
    require_sandbox(sandbox)  # before the wallet: no password asked for an agent that cannot serve
    config = ProviderConfig(
        wallet=_load_wallet(args),
        sandbox=sandbox,
        network=args.network,
        host=args.host,
        port=args.port,
        price_per_cpu_second=args.price_cpu,
        price_per_gpu_second=args.price_gpu,
        start_fee=args.start_fee,
        cpus=args.cpus,
        gpus=args.gpus,
        memory_bytes=args.memory,
        max_agreements=args.max_agreements,
        policy=PaymentPolicy(tolerance=args.tolerance, max_unpaid=args.max_unpaid),
        claim_grace=args.claim_grace,
        min_deposit_seconds=args.min_deposit_seconds,
        withdraw_offer_on_exit=args.withdraw_offer,
        ready_file=Path(args.ready_file) if args.ready_file else None,
        lie_fraction=lie_fraction,
    )
    agent = ProviderAgent(config)

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(agent.run)
                print(f"Provider {agent.address} serving at {agent.endpoint}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve)
    print("Provider stopped.")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .amounts import parse_amount
    from .batch import ExitCode, RunOptions, parse_value, read_parameters_file, run_notebook

    try:
        parameters = read_parameters_file(args.parameters_file) if args.parameters_file else {}
        parameters.update({name: parse_value(value) for name, value in args.parameter})
        if args.timeout is not None and args.timeout <= 0:
            raise ConfigurationError("--timeout needs a number of seconds above 0.")
        if args.providers < 1:
            raise ConfigurationError("--providers needs at least 1 provider.")
        if args.verify is not None and not 0 <= args.verify <= 1:
            raise ConfigurationError("--verify needs a fraction from 0 to 1 (0.1 checks a tenth of the tasks).")
        gpu_providers = args.gpu_providers if args.gpu_providers is not None else _local_gpus(args.providers)
        options = RunOptions(
            notebook=args.notebook,
            output=args.output,
            parameters=parameters,
            network=args.network,
            budget=parse_amount(args.budget) if args.budget else None,
            verify=args.verify,
            kernel=args.kernel,
            timeout=args.timeout,
            cwd=args.cwd,
            providers=args.providers,
            gpu_providers=gpu_providers,
        )
        outcome = run_notebook(options, out=lambda line: print(line, flush=True))
    except GolemError as error:  # refused before anything started
        print(f"golem run: {error}", file=sys.stderr)
        return int(ExitCode.USAGE)
    return int(outcome.exit_code)


def _local_gpus(providers: int) -> int:
    """One GPU provider for the embedded market if CuPy can use a GPU here."""
    from .provider.gpu import detect_gpus

    return min(1, providers, detect_gpus().count)


def _ledger(args: argparse.Namespace) -> int:
    from .amounts import format_wei, format_wei_exact
    from .ledger import Ledger

    with Ledger() as ledger:
        print(f"Ledger {ledger.path}")
        if args.what == "runs":
            for r in ledger.runs(limit=args.limit):
                code = "running" if r.exit_code is None else f"exit {r.exit_code}"
                print(
                    f"  {r.run_id[:10]}… {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created_at))} "
                    f"{r.status:<11} {code:<8} {format_wei(r.spent):>14} {r.spent:>22} wei "
                    f"{r.sessions} session(s)  {r.notebook}"
                )
                if r.error:
                    print(f"      {r.error}")
        elif args.what == "faults":
            _print_faults(ledger.faults()[-args.limit :] if args.limit > 0 else [])
        else:
            for s in ledger.sessions(limit=args.limit):
                print(
                    f"  0x{s.session_id[2:12]}… {s.status:<8} chain {s.chain_id} spent {format_wei_exact(s.spent)} "
                    f"of {format_wei_exact(s.budget)}  {s.label or ''}"
                )
    return 0


def _print_faults(faults: list) -> None:
    """``golem ledger faults``: each provider outvoted, oldest first, and what that means for renting."""
    if not faults:
        print("  no faults: verification never outvoted a provider (see --verify)")
        return
    for f in faults:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(f.created_at))
        graph = f"graph {f.graph_id[:12]}…" if f.graph_id else "no graph"
        tx = f"reported in tx {f.tx_hash}" if f.tx_hash else "not reported on-chain"
        print(f"  {when}  {f.provider}  session {f.session_id[:12]}…  {graph}  {tx}")
        print(f"      task {f.task}")
    providers = len({f.provider for f in faults})
    print(
        f"{providers} provider(s) above are not rented again from this ledger unless you ask: "
        "GolemCluster(allow_reported=True) or %golem connect --allow-reported."
    )


def _sessions(args: argparse.Namespace) -> int:
    import asyncio

    from .amounts import exact_wei, format_wei
    from .chain import Chain
    from .chain.wallet import default_wallet
    from .ledger import Ledger
    from .requestor.closing import close_recorded
    from .requestor.negotiation import Negotiator
    from .requestor.sessions import recorded_sessions, wallet_sessions

    chain = Chain.connect(args.network)
    if args.keystore or args.dev_account is not None:
        wallet = _load_wallet(args)
    else:
        wallet = default_wallet(chain.network)
    chain = Chain(chain.w3, chain.network, wallet)
    with Ledger() as ledger:
        if args.action == "close":
            if not args.session:
                raise ConfigurationError("Name the session to close: golem sessions close ID (see golem sessions).")
            ids = [s.session_id for s in recorded_sessions(ledger, chain, wallet.address)]
            session_id = _one_session(args.session, ids)
            negotiator = Negotiator(wallet.account, chain.network.chain_id)
            closing = asyncio.run(close_recorded(chain, ledger, negotiator, bytes.fromhex(session_id[2:])))
            print(f"golem: {closing.describe()}" + (f" (tx {closing.tx_hash})" if closing.tx_hash else ""))
            for holdout in closing.holdouts:
                print(f"  {holdout.provider} keeps {format_wei(holdout.locked)}: {holdout.reason}")
            return 0
        summaries = wallet_sessions(ledger, chain, wallet.address, include_closed=args.all)
    amount = exact_wei if args.wei else format_wei
    which = "" if args.all else "open "
    print(f"The {which}sessions of {wallet.address} on {chain.network.name} (chain {chain.network.chain_id}):")
    if not summaries:
        print("  none" + ("" if args.all else " (golem sessions --all lists closed ones too)"))
        return 0
    rows = [("session", "status", "deposited", "paid", "allocated", "refundable now", "returned", "closable")]
    now = chain.w3.eth.get_block("latest")["timestamp"]
    for s in summaries:
        rows.append(
            (
                s.session_id[:12] + "…",
                "closed" if s.closed else s.record.status,
                amount(s.deposited),
                amount(s.paid),
                amount(s.allocated),
                amount(s.refundable_now),
                amount(s.returned),
                s.closable(now),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if any(not s.closed for s in summaries):
        print("Close one with: golem sessions close ID" + ("" if args.wei else "   (exact amounts: --wei)"))
    return 0


def _one_session(text: str, ids: list[str]) -> str:
    """The recorded session ``text`` names: a full id or a unique prefix of one."""
    prefix = text.lower()
    prefix = prefix if prefix.startswith("0x") else "0x" + prefix
    matches = [i for i in ids if i.startswith(prefix.rstrip("…"))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigurationError(
            f"This wallet has no recorded session {text} on this network (see golem sessions --all)."
        )
    raise ConfigurationError(f"{text} names {len(matches)} sessions; give more of the id.")


if __name__ == "__main__":
    sys.exit(main())
