"""``%%golem`` and ``%golem``: the notebook's way onto the market.

``%load_ext golem_jupyter`` registers them. ``%%golem`` runs a cell as a Dask graph on rented
providers (see :mod:`.cellgraph`, :mod:`.planner`, :mod:`.execution`); ``%golem connect``,
``status``, ``providers``, ``budget`` and ``close`` manage the session the cells run on.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shlex
import textwrap
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import dask
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..amounts import format_wei_exact, parse_amount
from ..errors import BudgetExceeded, GolemError, InvalidInput
from ..market.matching import SANDBOX_TIERS
from ..scheduler.verify import ANNOTATION as VERIFY_ANNOTATION
from .cellgraph import analyze
from .display import OfferTable, display_mode, format_wei, progress_view
from .execution import CellRun, RunOptions, register_source
from .planner import plan_cell
from .session import REPORT_TIMEOUT, Connection, LocalSession, MarketSession, Session, no_gpu_message
from .transport import notebook_functions, notebook_modules

DEFAULT_BUDGET = "0.01"
BUDGET_ENV = "GOLEM_BUDGET"
VERIFY_ENV = "GOLEM_VERIFY"
"""The verify fraction sessions of this kernel start with (``golem run --verify`` sets it)."""
"""The most this kernel's sessions may spend together (``golem run --budget`` sets it)."""
_cell_numbers = itertools.count(1)

SUBCOMMANDS = ("connect", "status", "providers", "budget", "close")
"""The ``%golem`` subcommands, in the order help lists them; ``_<name>`` handles each, its options declared on it."""
_help_option = argument("-h", "--help", action="store_true", help="Show this usage and run nothing.")


@magics_class
class GolemMagics(Magics):
    """The ``%%golem`` cell magic and the ``%golem`` line magic."""

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self.market: MarketSession | None = None
        self.gpu_market: MarketSession | None = None
        self.local: LocalSession | None = None
        self.connection = Connection(verify=_verify_from_environment())
        """What sessions are opened with: ``%golem connect``'s choices, or the defaults."""
        limit = os.environ.get(BUDGET_ENV)
        self.budget_limit = parse_amount(limit) if limit else None
        """What all sessions of this kernel may spend together; None: each session's own budget is the limit."""
        self._closed_spent = 0
        atexit.register(self.close_all)

    # ------------------------------------------------------------------ %golem / %%golem

    @magic_arguments(name="%golem")
    @argument("--gpu", action="store_true", help="Rent GPU providers; `xp` is CuPy on them.")
    @argument("--providers", type=int, metavar="N", help="Have at least N providers rented before running.")
    @argument("--budget", metavar="X", help="Spend at most X on this cell (0.01, 0.01eth, 5gwei).")
    @argument("--max-price", metavar="X", help="Run only on providers charging at most X per CPU-second (e.g. 2gwei).")
    @argument(
        "--verify",
        type=float,
        metavar="FRACTION",
        help="Check this fraction of the cell's tasks: re-run each elsewhere and compare (default: the session's).",
    )
    @argument("--timeout", type=float, metavar="S", help="Cancel the graph after S seconds.")
    @argument("--out", metavar="a,b", help="Write back only these names.")
    @argument("--local", action="store_true", help="Run the same graph on a local cluster: no market, no money.")
    @argument("--dry-run", action="store_true", help="Show the graph and a cost bound; run nothing.")
    @line_cell_magic
    def golem(self, line: str, cell: str | None = None) -> object:
        """Run a cell as a Dask graph on providers rented on the market.

        %%golem [options] runs the cell below it: one task per statement, the names it reads
        sent as inputs, the names it assigns written back. %golem SUBCOMMAND manages the
        session the cells run on (the subcommands are listed after the options).
        """
        __tracebackhide__ = True
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    def _line(self, line: str) -> object:
        words = shlex.split(line)
        if words and words[0] in ("-h", "--help"):
            print(_plain(self.golem.__doc__))
            return None
        if not words or words[0] not in SUBCOMMANDS:
            raise UsageError(f"Unknown %golem command {words[0] if words else ''!r}. Usage:\n{_line_usage()}")
        handler = getattr(self, f"_{words[0]}")
        args = _parse(handler, line.split(None, 1)[1] if len(words) > 1 else "")
        if args.help:
            print(_plain(handler.parser.format_help()))
            return None
        return handler(args)

    # ------------------------------------------------------------------ the cell magic

    def _cell(self, line: str, cell: str) -> None:
        __tracebackhide__ = True
        args = _parse(self.golem, line)
        self._check_cell_options(args)
        if self.shell.transform_cell(cell).rstrip("\n") != cell.rstrip("\n") and _has_ipython_syntax(cell):
            raise UsageError("A %%golem cell is plain Python: IPython syntax (!, %, ?) cannot run on providers.")
        namespace = self.shell.user_ns
        filename = f"<golem-cell-{next(_cell_numbers)}>"
        register_source(filename, f"%%golem {line}\n{cell}")
        modules = notebook_modules(namespace)  # modules, and library callables with hidden state
        if "xp" not in namespace:
            modules["xp"] = "numpy"  # the array module tasks get (CuPy on GPU workers): a module, not a value
        graph = analyze(cell, first_line=2, filename=filename, modules=modules, callables=notebook_functions(namespace))
        out = frozenset(n.strip() for n in args.out.split(",") if n.strip()) if args.out else None
        if out is not None and (unknown := out - graph.outputs - graph.deleted):
            raise UsageError(f"--out names {', '.join(sorted(unknown))}, which the cell does not assign.")
        plan = plan_cell(graph, filename=filename, out=out, namespace=namespace)
        if args.dry_run:
            print(plan.describe())
            print(self._cost_bound(args))
            return
        session = self._session_for(args) if plan.units else None
        options = self._run_options(args, session)
        cap = parse_amount(args.budget) if args.budget else None
        mode = display_mode(self.shell)
        view = progress_view(mode if plan.units else "none")
        market = session if isinstance(session, MarketSession) else None
        if market is not None and cap is not None:
            market.cluster.cap_next_graphs(cap)
        checks = dask.annotate(**{VERIFY_ANNOTATION: args.verify}) if args.verify is not None else nullcontext()
        try:
            with checks:
                CellRun(plan, namespace, session, view).run(options)
        finally:
            if market is not None and cap is not None:
                market.cluster.cap_next_graphs(None)

    def _check_cell_options(self, args) -> None:
        if args.providers is not None and args.providers < 1:
            raise UsageError("--providers needs a number of providers of at least 1.")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout needs a number of seconds above 0.")
        if args.verify is not None and not 0 <= args.verify <= 1:
            raise UsageError("--verify needs a fraction between 0 and 1.")
        if args.verify is not None and args.local:
            raise UsageError("--verify checks providers' results; --local runs on this machine, with nothing to check.")
        if args.local and (args.gpu or args.max_price or args.budget):
            raise UsageError("--local runs without the market: --gpu, --max-price and --budget do not apply.")
        for option in ("budget", "max_price"):
            value = getattr(args, option)
            if value is not None:
                try:
                    parse_amount(value, "eth" if option == "budget" else "wei")
                except InvalidInput as error:
                    raise UsageError(f"--{option.replace('_', '-')}: {error}") from None

    def _run_options(self, args, session: Session | None) -> RunOptions:
        resources = {"GPU": 1} if args.gpu else None
        workers = None
        if args.max_price and isinstance(session, MarketSession):
            limit = parse_amount(args.max_price, "wei")
            # Only providers whose workers are still here: a task bound to a gone one never runs.
            joined = {str(w["name"]) for w in session.client.scheduler_info()["workers"].values()}
            rentals = [r for r in session.cluster.rentals.values() if r.serving and r.provider in joined]
            workers = [r.provider for r in rentals if r.offer.price_per_cpu_second <= limit]
            if not workers:
                raise UsageError(
                    f"No rented provider charges at most {format_wei(limit)} per CPU-second; "
                    "reconnect with `%golem connect --max-price X` to rent cheaper ones."
                )
        return RunOptions(timeout=args.timeout, resources=resources, workers=workers)

    def _cost_bound(self, args) -> str:
        cap = parse_amount(args.budget) if args.budget else None
        if args.local:
            return "Cost: none (local cluster)."
        session = self.gpu_market if args.gpu else self.market
        bound = cap if cap is not None else (session.cluster.remaining if session else self.connection.budget)
        text = f"Cost: at most {format_wei(bound)} (the budget guard stops the graph there)"
        if args.timeout and session is not None:
            from ..market.pricing import Tariff

            # Every rented worker's threads busy for the whole timeout (start fees included).
            most = sum(
                Tariff.from_offer(r.offer, gpu=args.gpu).bound(args.timeout, threads=max(1, r.offer.cpus), gpu=args.gpu)
                for r in session.cluster.rentals.values()
            )
            text += f"; with --timeout {args.timeout:g} s at most {format_wei(min(bound, most))}"
        return text + "."

    # ------------------------------------------------------------------ sessions

    def _session_for(self, args) -> Session:
        if args.local:
            if self.local is None:
                self.local = LocalSession()
            return self.local
        if args.gpu:
            if self.gpu_market is None:
                self.gpu_market = self._open_market(replace(self.connection, gpu=True, providers=1))
            session = self.gpu_market
        else:
            if self.market is None:
                print("golem: no session yet; connecting with %golem connect defaults.")
                self.market = self._open_market(self.connection)
            session = self.market
        if args.providers is not None:
            running = sum(r.serving for r in session.cluster.rentals.values())
            if running < args.providers:
                session.cluster.scale(args.providers)
        return session

    def _open_market(self, connection: Connection) -> MarketSession:
        from ..chain.network import NETWORK_ENV, resolve
        from ..devnet import Devnet, running_devnet

        connection = replace(connection, budget=self._grant(connection.budget))
        devnet = None
        network = connection.network
        if network is None and not os.environ.get(NETWORK_ENV) and running_devnet() is None:
            print("golem: no devnet is running; starting an embedded one with 2 providers (stopped by %golem close).")
            devnet = Devnet(port=0, providers=2)
            network = devnet.start()
        if connection.gpu:
            self._require_gpu_offers(resolve(network))
        try:
            session = MarketSession(connection, devnet=devnet, network=network)
        except BaseException:
            if devnet is not None:
                devnet.stop()
            raise
        print(f"golem: connected: {session.describe()}; budget {format_wei(connection.budget)}.")
        return session

    def _allowance_left(self) -> int | None:
        """What the run's budget still allows new deposits to hold; None without a run budget."""
        if self.budget_limit is None:
            return None
        committed = sum(s.cluster.budget for s in (self.market, self.gpu_market) if s is not None)
        return self.budget_limit - self._closed_spent - committed

    def _grant(self, requested: int) -> int:
        """The budget a new session gets: what was asked, within the run's budget."""
        left = self._allowance_left()
        if left is None or requested <= left:
            return requested
        if left <= 0:
            raise BudgetExceeded(
                f"This kernel's budget of {format_wei(self.budget_limit)} (${BUDGET_ENV}, set by golem run --budget) "
                "is committed to its sessions; close one, or run again with a larger --budget."
            )
        limit = format_wei(self.budget_limit)
        print(f"golem: budget lowered to {format_wei(left)}, what is left of this run's {limit}.")
        return left

    def _require_gpu_offers(self, network) -> None:
        from ..chain import Chain
        from ..chain.wallet import Wallet

        chain = Chain.connect(network, Wallet.dev(0) if network.accounts else None)
        offers = chain.registry.active_offers()
        if not any(o.gpus > 0 for o in offers):
            raise GolemError(no_gpu_message(offers))

    # ------------------------------------------------------------------ %golem subcommands

    @magic_arguments(name="golem connect")
    @_help_option
    @argument("network", nargs="?", metavar="NETWORK", help="JSON-RPC URL or connection file (default: the devnet).")
    @argument("--providers", type=int, default=2, metavar="N", help="Rent N providers (default 2).")
    @argument("--gpu", action="store_true", help="Rent GPU providers, for cells run with --gpu.")
    @argument("--budget", default=DEFAULT_BUDGET, metavar="X", help=f"Spend at most X (default {DEFAULT_BUDGET}).")
    @argument("--max-price", metavar="X", help="Most per CPU-second (per GPU-second with --gpu), e.g. 2gwei.")
    @argument(
        "--sandbox",
        choices=SANDBOX_TIERS,
        metavar="TIER",
        help=f"Rent only providers whose sandbox is at least TIER ({' < '.join(SANDBOX_TIERS)}); "
        "bwrap: your code runs in a bubblewrap sandbox per agreement. Default: any.",
    )
    @argument(
        "--verify",
        type=float,
        metavar="FRACTION",
        help="Check this fraction of every cell's tasks by running them again on another provider (default 0, "
        f"or ${VERIFY_ENV}, set by golem run --verify).",
    )
    @argument(
        "--allow-reported",
        action="store_true",
        help="Rent providers your ledger recorded a wrong result of, too (by default they are not rented again).",
    )
    def _connect(self, args) -> None:
        """Rent providers for this notebook's cells.

        A session of the same kind (CPU, or --gpu) opened before is closed and settled first.
        """
        if args.providers < 1:
            raise UsageError("--providers needs at least 1.")
        verify = self.connection.verify if args.verify is None else args.verify
        if not 0 <= verify <= 1:
            raise UsageError("--verify needs a fraction between 0 and 1.")
        try:
            budget = parse_amount(args.budget)
            max_price = parse_amount(args.max_price, "wei") if args.max_price else None
        except InvalidInput as error:
            raise UsageError(str(error)) from None
        connection = Connection(
            network=args.network,
            providers=args.providers,
            gpu=args.gpu,
            budget=budget,
            max_price_cpu=None if args.gpu else max_price,
            max_price_gpu=max_price if args.gpu else None,
            sandbox=args.sandbox,
            verify=verify,
            allow_reported=args.allow_reported,
        )
        self.connection = replace(connection, gpu=False)
        slot = "gpu_market" if args.gpu else "market"
        self._close_slot(slot)
        setattr(self, slot, self._open_market(connection))
        return None

    @magic_arguments(name="golem status")
    @_help_option
    def _status(self, args) -> None:
        """Show the sessions, what they spent and their last graphs."""
        sessions = [s for s in (self.market, self.gpu_market, self.local) if s is not None]
        if not sessions:
            print("golem: not connected; run %golem connect (or any %%golem cell).")
            return
        for session in sessions:
            print(f"golem: {session.describe()}")
            if isinstance(session, MarketSession):
                c = session.cluster
                print(f"  spent {format_wei_exact(c.spent)} of {format_wei_exact(c.budget)}; {len(c.graphs)} graph(s)")
                for graph in c.graphs[-10:]:
                    record = c.ledger.graph(graph["graph_id"]) if graph.get("paid") else None
                    status = record.status if record else "nothing to pay"
                    tx = record.tx_hash if record and record.tx_hash else ""
                    amount = format_wei_exact(graph["total"])
                    print(f"  graph {graph['graph_id'][:18]}… {graph['n_tasks']} tasks {amount} {status} {tx}")
                self._print_verification(c)

    @staticmethod
    def _print_verification(cluster: Any) -> None:
        """What ``--verify`` checked in the session, and each provider it reported (DESIGN.md section 6)."""
        if cluster.verification is None:
            return
        s = cluster.verification.stats
        cluster.wait_for_reports(REPORT_TIMEOUT)
        if s.checked or cluster.verify:
            print(
                f"  verified: {s.checked} task(s) checked at --verify {cluster.verify:g}, {s.mismatches} mismatch(es), "
                f"{s.referees} refereed ({s.local_runs} run on this machine)"
            )
        for fault in cluster.faults:
            graph = f" in graph 0x{fault['graph_id'][:16]}…" if fault.get("graph_id") else ""
            tx_hash = fault.get("tx_hash")
            on_chain = f"reportFault tx {tx_hash}" if tx_hash else f"not on-chain: {fault.get('error')}"
            print(
                f"  reported {fault['provider']}: a wrong result for {fault['key'][:40]}{graph}; {on_chain}; "
                "paid nothing for that graph; dropped and replaced"
            )
        if cluster.faults:
            reported = {fault["provider"] for fault in cluster.faults}
            rentals = [(p, r) for p, r in cluster.rentals.items() if p not in reported]
            now = [f"{p} ({'serving' if r.serving else 'joining'})" for p, r in rentals]
            print(f"  providers now: {', '.join(now) or 'none'}")

    @magic_arguments(name="golem providers")
    @_help_option
    def _providers(self, args) -> OfferTable:
        """List the providers offering on the market."""
        from ..chain import Chain
        from ..chain.network import resolve
        from ..chain.wallet import Wallet
        from ..ledger import Ledger
        from ..market.matching import offers_with_reputations

        session = self.market or self.gpu_market
        if session is not None:
            chain = session.cluster.chain
        else:
            network = resolve(self.connection.network)
            chain = Chain.connect(network, Wallet.dev(0) if network.accounts else None)
        ranked = offers_with_reputations(chain)
        rented = set()
        for s in (self.market, self.gpu_market):
            if s is not None:
                rented |= {p for p, r in s.cluster.rentals.items() if r.serving}
        scores = {r.offer.provider: r.score for r in ranked if r.score is not None}
        faults = {r.offer.provider: r.reputation.faults for r in ranked if r.reputation is not None}
        ledger = session.cluster.ledger if session is not None else Ledger()
        reported = ledger.reported_providers()  # checksummed, as offers are
        return OfferTable([r.offer for r in ranked], chain.network.name, scores, rented, faults, reported)

    @magic_arguments(name="golem budget")
    @_help_option
    @argument("amount", nargs="*", metavar="X", help="The new budget (0.02, 0.02 ETH, 5gwei); without it, show it.")
    def _budget(self, args) -> None:
        """Show the budget, what is spent and what is left; or set the budget to X."""
        rest = " ".join(args.amount)
        session = self.market
        if not rest:
            if session is None:
                print("golem: not connected.")
            else:
                c = session.cluster
                print(
                    f"golem: budget {format_wei_exact(c.budget)}, spent {format_wei_exact(c.spent)}, "
                    f"left {format_wei_exact(c.remaining)}"
                )
            return
        try:
            amount = parse_amount(rest)
        except InvalidInput as error:
            raise UsageError(str(error)) from None
        if session is None:
            self.connection = replace(self.connection, budget=amount)
            print(f"golem: the next session gets a budget of {format_wei_exact(amount)}.")
            return
        left = self._allowance_left()
        if left is not None and amount - session.cluster.budget > left:
            raise BudgetExceeded(
                f"{format_wei(amount)} is more than this run's budget allows "
                f"({format_wei(self.budget_limit)} in all, golem run --budget)."
            )
        session.cluster.set_budget(amount)
        print(f"golem: budget {format_wei_exact(amount)}; left {format_wei_exact(session.cluster.remaining)}.")

    @magic_arguments(name="golem close")
    @_help_option
    def _close(self, args) -> None:
        """Close the sessions and settle what ran.

        A devnet this kernel started for them stops too.
        """
        closed = self.close_all()
        print(f"golem: closed {closed} session(s); what ran is settled." if closed else "golem: nothing to close.")

    def close_all(self) -> int:
        return sum([self._close_slot(slot) for slot in ("gpu_market", "market", "local")])

    def _close_slot(self, slot: str) -> bool:
        """Close the session in ``slot`` (settling what ran); what it spent stays spent for the run's budget."""
        session = getattr(self, slot)
        if session is None:
            return False
        setattr(self, slot, None)
        try:
            session.close()
        finally:
            if isinstance(session, MarketSession):
                self._closed_spent += session.cluster.spent
        if isinstance(session, MarketSession) and session.cluster.close_note:
            print(f"golem: {session.cluster.close_note}.")
        return True


def _verify_from_environment() -> float:
    """The verify fraction in ``$GOLEM_VERIFY`` (0 when unset); a bad value is said, and ignored."""
    text = os.environ.get(VERIFY_ENV, "").strip()
    if not text:
        return 0.0
    try:
        fraction = float(text)
    except ValueError:
        fraction = -1.0
    if not 0 <= fraction <= 1:
        print(f"golem: ${VERIFY_ENV}={text!r} is not a fraction from 0 to 1; no task is checked.")
        return 0.0
    return fraction


def _subcommands_help() -> str:
    """One line per ``%golem`` subcommand: its name and the first line of its declared description."""
    labels = [f"%golem {name}" for name in SUBCOMMANDS]
    width = max(map(len, labels))
    lines = ["subcommands (%golem SUBCOMMAND -h shows one's options):"]
    for name, label in zip(SUBCOMMANDS, labels, strict=True):
        summary = getattr(GolemMagics, f"_{name}").parser.description.strip().splitlines()[0]
        lines.append(f"  {label:<{width}}  {summary}")
    return "\n".join(lines)


def _line_usage() -> str:
    """The usage of every subcommand and of the cell magic, as their declared parsers write it."""
    handlers = [getattr(GolemMagics, f"_{name}") for name in SUBCOMMANDS] + [GolemMagics.golem]
    return "\n".join(textwrap.dedent(_plain(h.parser.format_usage())).strip() for h in handlers)


def _plain(help_text: str) -> str:
    """Help text to print, without the RST ``::`` that IPython starts it with (it is a docstring too)."""
    return help_text.removeprefix("::\n\n")


# %%golem? (the magic's docstring, which magic_arguments wrote from the cell options) ends with the
# subcommands, declared on their handlers after the magic.
GolemMagics.golem.__doc__ += f"\n{_subcommands_help()}\n"


def _parse(options, line: str):
    """Parse magic options; a mistake is answered with the usage text."""
    try:
        return parse_argstring(options, line)
    except UsageError as error:
        raise UsageError(f"{error}\n{_plain(options.parser.format_help())}") from None


def _has_ipython_syntax(cell: str) -> bool:
    import ast

    try:
        ast.parse(cell)
    except SyntaxError:
        return True
    return False
