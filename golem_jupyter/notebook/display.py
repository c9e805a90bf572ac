"""What the user sees while a ``%%golem`` cell runs, and the receipt when it ends: rendering only.

The data rendered (:class:`~.receipts.Progress`, :class:`~.receipts.Receipt`) lives in
:mod:`.receipts`. Two renderings of the same information: ipywidgets in a Jupyter frontend
(:class:`WidgetProgressView`) and plain text where widgets cannot render, such as terminal
IPython, papermill batch runs or ``$GOLEM_DISPLAY=text`` (:class:`TextProgressView`).
:func:`display_mode` picks one, :func:`progress_view` builds it.

The magic calls ``update()`` every ~0.2 s from the kernel's main thread while the graph runs,
``finish()`` once when it has ended, and possibly ``settled()`` later, from the settlement
thread, when the payment's status changes. Amounts are integers in wei throughout, shown short
(:func:`~..amounts.format_wei`) with the exact wei a column away in text and on hover (and in the
receipt's "amounts in wei" details) in HTML.
"""

from __future__ import annotations

import os
import sys
import threading
from html import escape
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from IPython.display import display

from ..amounts import exact_wei, format_wei
from ..market.matching import offer_sandbox
from .receipts import Progress, ProviderProgress, Receipt

if TYPE_CHECKING:
    import ipywidgets

TEXT_QUIET_S = 2.0  # the text view says nothing about graphs that end sooner
TEXT_EVERY_S = 5.0  # and at most one progress line per this many seconds after that

STATUS_TEXT = {
    "nothing to pay": "nothing to pay",
    "pending": "pending (not submitted yet)",
    "submitted": "submitted, waiting for confirmation",
    "confirmed": "confirmed",
    "failed": "failed, will be retried",
}


def short_address(address: str) -> str:
    """``0x1234…abcd`` for a 0x-address of 42 characters; anything else unchanged."""
    if len(address) == 42 and address[:2] in ("0x", "0X"):
        return f"{address[:6]}…{address[-4:]}"
    return address


def format_seconds(seconds: float) -> str:
    """``12.4 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def display_mode(shell: object | None = None) -> str:
    """How to show progress in ``shell`` (the running IPython shell by default): "widgets" or "text".

    ``$GOLEM_DISPLAY`` set to "text" or "widgets" decides. Otherwise widgets only in an
    ipykernel shell (a Jupyter frontend) with ipywidgets installed. Papermill runs also use an
    ipykernel shell; the batch runner sets ``GOLEM_DISPLAY=text`` for them.
    """
    forced = os.environ.get("GOLEM_DISPLAY")
    if forced in ("text", "widgets"):
        return forced
    if shell is None:
        shell = _current_shell()
    # By class name, so that ipykernel is not imported here.
    if not any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__):
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    return "widgets"


def _current_shell() -> object | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


@runtime_checkable
class ProgressView(Protocol):
    """Where a running graph's progress and its receipt go."""

    def update(self, progress: Progress) -> None:
        """The graph's progress now; called every ~0.2 s from the kernel's main thread."""

    def finish(self, receipt: Receipt) -> None:
        """The graph has ended (successfully or not); called once, from the main thread."""

    def settled(self, receipt: Receipt) -> None:
        """The same receipt with a new status or tx_hash; possibly later, possibly from another thread."""


def progress_view(mode: str, *, title: str = "", stream: TextIO | None = None) -> ProgressView:
    """A view for ``mode``: "widgets", "text" (to ``stream``, stdout by default) or "none"."""
    if mode == "widgets":
        return WidgetProgressView(title)
    if mode == "text":
        return TextProgressView(title, stream if stream is not None else sys.stdout)
    if mode == "none":
        return NullProgressView()
    raise ValueError(f"unknown display mode {mode!r}: expected 'widgets', 'text' or 'none'")


class NullProgressView:
    """Shows nothing; keeps the latest receipt in ``receipt``."""

    def __init__(self) -> None:
        self.receipt: Receipt | None = None

    def update(self, progress: Progress) -> None:
        pass

    def finish(self, receipt: Receipt) -> None:
        self.receipt = receipt

    def settled(self, receipt: Receipt) -> None:
        self.receipt = receipt


# --- plain text --------------------------------------------------------------------------------


def progress_text(progress: Progress, title: str = "") -> str:
    """One line: ``golem: 412/1000 tasks, 3 providers, 12.4 s, spent 1.2 gwei of 0.01 ETH left``."""
    parts = [
        f"{progress.done}/{progress.total} tasks",
        _plural(len(progress.providers), "provider"),
        format_seconds(progress.elapsed),
    ]
    if progress.erred:
        parts.insert(1, f"{progress.erred} erred")
    if progress.budget_left is not None:
        parts.append(f"spent {format_wei(progress.spent)} of {format_wei(progress.budget_left)} left")
    prefix = f"golem: {title}: " if title else "golem: "
    return prefix + ", ".join(parts)


def _local_sentence(receipt: Receipt) -> str:
    return (
        f"ran {_plural(receipt.n_tasks, 'task')} on the local cluster in "
        f"{format_seconds(receipt.elapsed)} (no payment)."
    )


def _tx_text(receipt: Receipt) -> str:
    if receipt.tx_hash:
        return receipt.tx_hash
    return "none" if receipt.status == "nothing to pay" else "pending"


def _facts(receipt: Receipt) -> list[tuple[str, str, int | None]]:
    """The receipt's key/value lines below the table, full length (users copy them): label, text, and
    the amount in wei where the value is one."""
    facts: list[tuple[str, str, int | None]] = [
        ("graph", receipt.graph_id or "-", None),
        ("transaction", _tx_text(receipt), None),
        ("status", STATUS_TEXT.get(receipt.status, receipt.status), None),
    ]
    if receipt.budget_left is not None:
        facts.append(("budget left", format_wei(receipt.budget_left), receipt.budget_left))
    if receipt.verification is not None:
        facts.append(("verified", receipt.verification.sentence(), None))
        facts.append(("checks cost", format_wei(receipt.verification.cost), receipt.verification.cost))
    return facts


def _amount_html(amount: int) -> str:
    """The short amount, the exact wei on hover."""
    return f'<span title="{escape(exact_wei(amount))}">{escape(format_wei(amount))}</span>'


def receipt_text(receipt: Receipt) -> str:
    """The receipt as aligned plain text, without a trailing newline."""
    if receipt.status == "local":
        lines = [f"golem: {_local_sentence(receipt)}"]
        if receipt.note:
            lines.append(f"golem: {receipt.note}")
        return "\n".join(lines)

    header = (
        f"golem: receipt: {_plural(receipt.n_tasks, 'task')} on {_plural(len(receipt.lines), 'provider')} "
        f"in {format_seconds(receipt.elapsed)}"
    )
    table = [("provider", "cpu s", "gpu s", "amount", "wei")]
    table += [
        (
            line.provider,
            f"{line.cpu_seconds:.3f}",
            f"{line.gpu_seconds:.3f}",
            format_wei(line.amount),
            str(line.amount),
        )
        for line in receipt.lines
    ]
    table.append(
        (
            "total",
            f"{sum(line.cpu_seconds for line in receipt.lines):.3f}",
            f"{sum(line.gpu_seconds for line in receipt.lines):.3f}",
            format_wei(receipt.total),
            str(receipt.total),
        )
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [header]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    facts = _facts(receipt)
    label_width = max(len(label) for label, _, _ in facts)
    lines += [
        f"  {label.ljust(label_width)}  {value}" + ("" if wei is None else f" ({exact_wei(wei)})")
        for label, value, wei in facts
    ]
    if receipt.note:
        lines.append(f"  {receipt.note}")
    return "\n".join(lines)


class TextProgressView:
    """Progress and receipt as plain lines on ``stream``: no carriage returns, no ANSI codes.

    Silent for graphs that end within 2 s, then at most one progress line every 5 s, timed by
    the graph's own ``elapsed``. ``settled()`` only records the receipt: by then the cell has
    ended, and printing from another thread would land in whichever cell runs now.
    """

    def __init__(self, title: str = "", stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stdout
        self.receipt: Receipt | None = None
        self._printed_at: float | None = None

    def update(self, progress: Progress) -> None:
        if progress.elapsed < TEXT_QUIET_S:
            return
        if self._printed_at is not None and progress.elapsed - self._printed_at < TEXT_EVERY_S:
            return
        self._printed_at = progress.elapsed
        self._write(progress_text(progress, self.title))

    def finish(self, receipt: Receipt) -> None:
        self.receipt = receipt
        self._write(receipt_text(receipt))

    def settled(self, receipt: Receipt) -> None:
        self.receipt = receipt

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


# --- widgets -----------------------------------------------------------------------------------


def receipt_html(receipt: Receipt) -> str:
    """The receipt as an HTML table; every value from the receipt is escaped."""
    parts: list[str] = []
    if receipt.status == "local":
        sentence = _local_sentence(receipt)
        parts.append(f"<p>{escape(sentence[0].upper() + sentence[1:])}</p>")
    else:
        rows = [
            "<tr>"
            f'<td title="{escape(line.provider)}"><code>{escape(short_address(line.provider))}</code></td>'
            f"<td>{line.cpu_seconds:.3f}</td><td>{line.gpu_seconds:.3f}</td>"
            f"<td>{_amount_html(line.amount)}</td>"
            "</tr>"
            for line in receipt.lines
        ]
        parts.append(
            "<table>"
            "<thead><tr><th>provider</th><th>cpu s</th><th>gpu s</th><th>amount</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody>"
            f"<tfoot><tr><th>total ({escape(_plural(receipt.n_tasks, 'task'))}, "
            f"{escape(format_seconds(receipt.elapsed))})</th>"
            f"<th>{sum(line.cpu_seconds for line in receipt.lines):.3f}</th>"
            f"<th>{sum(line.gpu_seconds for line in receipt.lines):.3f}</th>"
            f"<th>{_amount_html(receipt.total)}</th></tr></tfoot>"
            "</table>"
        )
        exact = [
            f"<tr><td><code>{escape(line.provider)}</code></td><td><code>{line.amount}</code></td></tr>"
            for line in receipt.lines
        ]
        exact.append(f"<tr><th>total</th><th><code>{receipt.total}</code></th></tr>")
        parts.append(
            "<details><summary>amounts in wei</summary>"
            f"<table><thead><tr><th>provider</th><th>wei</th></tr></thead><tbody>{''.join(exact)}</tbody></table>"
            "</details>"
        )
        facts = "<br>".join(
            f"{escape(label)}: <code>{escape(value) if wei is None else _amount_html(wei)}</code>"
            for label, value, wei in _facts(receipt)
        )
        parts.append(f"<p>{facts}</p>")
    if receipt.note:
        parts.append(f"<p><i>{escape(receipt.note)}</i></p>")
    return f'<div class="golem-receipt">{"".join(parts)}</div>'


class _ProviderRow:
    """One provider's line: short address, a bar of its tasks, and "done/total (n running)"."""

    def __init__(self, widgets: Any, provider: str, total: int) -> None:
        self.name = widgets.Label(short_address(provider), tooltip=provider, layout=widgets.Layout(width="10em"))
        self.bar = widgets.IntProgress(value=0, min=0, max=total, layout=widgets.Layout(width="50%"))
        self.count = widgets.Label()
        self.box = widgets.HBox([self.name, self.bar, self.count])

    def show(self, progress: ProviderProgress, total: int) -> None:
        self.bar.max = total  # before value: ipywidgets clamps value to max
        self.bar.value = min(progress.done, total)
        self.count.value = f"{progress.done}/{total} ({progress.running} running)"


class WidgetProgressView:
    """Progress as ipywidgets: a header, one bar per provider, an overall bar, then the receipt.

    The box is displayed once, on the first ``update()`` or ``finish()``. ``settled()`` may run
    on another thread and touches only the receipt's HTML widget.
    """

    def __init__(self, title: str = "") -> None:
        import ipywidgets as widgets

        self._widgets = widgets
        self.title = title
        self.receipt: Receipt | None = None
        self.header = widgets.HTML(value=self._header_html(0.0, 0, None))
        self.rows_box = widgets.VBox()
        self.rows: dict[str, _ProviderRow] = {}
        self.overall = widgets.IntProgress(value=0, min=0, max=0, layout=widgets.Layout(width="50%"))
        self.overall_count = widgets.Label()
        self.receipt_widget: ipywidgets.HTML | None = None
        overall_name = widgets.Label("all", layout=widgets.Layout(width="10em"))
        self.box = widgets.VBox(
            [self.header, self.rows_box, widgets.HBox([overall_name, self.overall, self.overall_count])]
        )
        self._last: Progress | None = None
        self._shown = False
        self._lock = threading.Lock()

    def update(self, progress: Progress) -> None:
        self._last = progress
        self.header.value = self._header_html(progress.elapsed, progress.spent, progress.budget_left)
        for provider in progress.providers:
            row = self.rows.get(provider.provider)
            if row is None:
                row = self.rows[provider.provider] = _ProviderRow(self._widgets, provider.provider, progress.total)
                self.rows_box.children = (*self.rows_box.children, row.box)
            row.show(provider, progress.total)
        self.overall.max = progress.total
        self.overall.value = min(progress.done, progress.total)
        self.overall.bar_style = "warning" if progress.erred else ""
        erred = f", {progress.erred} erred" if progress.erred else ""
        self.overall_count.value = f"{progress.done}/{progress.total}{erred}"
        self._show()

    def finish(self, receipt: Receipt) -> None:
        last = self._last
        if last is None:
            # Ended before the first update: all we know is the receipt.
            last = Progress(receipt.n_tasks, 0 if receipt.note else receipt.n_tasks, 0, (), 0.0, 0, None)
        style = "danger" if last.erred else "success" if last.done >= last.total else "warning"
        self.header.value = self._header_html(receipt.elapsed, receipt.total, receipt.budget_left, final=True)
        for row in self.rows.values():
            row.bar.bar_style = style
            row.count.value = f"{row.bar.value}/{last.total}"
        self.overall.max = last.total
        self.overall.value = min(last.done, last.total)
        self.overall.bar_style = style
        erred = f", {last.erred} erred" if last.erred else ""
        self.overall_count.value = f"{last.done}/{last.total}{erred}"
        with self._lock:
            self.receipt = receipt
            self.receipt_widget = self._widgets.HTML(value=receipt_html(receipt))
        self.box.children = (*self.box.children, self.receipt_widget)
        self._show()

    def settled(self, receipt: Receipt) -> None:
        with self._lock:
            self.receipt = receipt
            if self.receipt_widget is not None:
                self.receipt_widget.value = receipt_html(receipt)

    def _show(self) -> None:
        if not self._shown:
            self._shown = True
            display(self.box)

    def _header_html(self, elapsed: float, spent: int, budget_left: int | None, *, final: bool = False) -> str:
        """Title, time and money; ``budget_left`` is before the graph while running, after it when final."""
        parts = [f"<b>{escape(self.title or 'golem')}</b>", escape(format_seconds(elapsed))]
        if budget_left is not None:
            joint = ", " if final else " of "
            parts.append(f"spent {_amount_html(spent)}{joint}{_amount_html(budget_left)} left")
        return " · ".join(parts)


class OfferTable(list):
    """The offers on the market, as returned by ``%golem providers``: a list of ``Offer``, shown as a table.

    ``reputation`` maps providers to a score in [0, 1] (absent: new on the market); ``rented``
    holds the providers this notebook rents. The sandbox column is what each offer states it runs
    requestors' code in ("none" when it states nothing readable; see ``%golem connect --sandbox``).
    ``faults`` maps providers to how many ``FaultReported`` events the escrow holds against them
    (absent: none); ``reported`` holds the providers the user's own ledger recorded a wrong result
    of, which ``%golem connect`` does not rent unless given ``--allow-reported``.
    """

    def __init__(
        self,
        offers: list[Any],
        network: str,
        reputation: dict[str, float],
        rented: set[str],
        faults: dict[str, int] | None = None,
        reported: set[str] | None = None,
    ) -> None:
        super().__init__(offers)
        self.network = network
        self.reputation = reputation
        self.rented = rented
        self.faults = faults or {}
        self.reported = reported or set()

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for o in self:
            score = self.reputation.get(o.provider)
            faults = str(self.faults.get(o.provider, 0)) + (" (reported by you)" if o.provider in self.reported else "")
            rows.append(
                (
                    o.provider + (" (rented)" if o.provider in self.rented else ""),
                    format_wei(o.price_per_cpu_second),
                    format_wei(o.price_per_gpu_second),
                    f"{o.gpus} {o.gpu_model}".strip() if o.gpus else "0",
                    "new" if score is None else f"{score:.2f}",
                    faults,
                    offer_sandbox(o),
                    o.endpoint,
                )
            )
        return rows

    _HEADER = ("provider", "per CPU-s", "per GPU-s", "GPUs", "reputation", "faults", "sandbox", "endpoint")

    def __repr__(self) -> str:
        rows = [self._HEADER, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._HEADER))]
        lines = [f"{len(self)} offer(s) on {self.network}:"]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in self._HEADER)
        body = "".join(
            "<tr>"
            + f"<td>{escape(row[0])}</td>"
            + f"<td>{_amount_html(o.price_per_cpu_second)}</td><td>{_amount_html(o.price_per_gpu_second)}</td>"
            + "".join(f"<td>{escape(c)}</td>" for c in row[3:])
            + "</tr>"
            for o, row in zip(self, self._rows(), strict=True)
        )
        caption = escape(f"{len(self)} offer(s) on {self.network}")
        return f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
