"""The notebook's progress views and receipts: text, widgets and none."""

from __future__ import annotations

import io
import re
import sys
import threading

import ipywidgets
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from golem_jupyter.amounts import exact_wei, format_wei, format_wei_exact, parse_amount
from golem_jupyter.notebook import display as gd
from golem_jupyter.notebook.display import (
    NullProgressView,
    ProgressView,
    TextProgressView,
    WidgetProgressView,
    display_mode,
    progress_view,
    receipt_html,
    receipt_text,
    short_address,
)
from golem_jupyter.notebook.receipts import Progress, ProviderProgress, Receipt, ReceiptLine

A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
C = "0x" + "c3" * 20
GRAPH = "0x" + "11" * 32
TX = "0x" + "22" * 32


def progress(elapsed: float, done: int = 0, *, total: int = 10, erred: int = 0, providers=(), budget=10**16):
    return Progress(
        total=total,
        done=done,
        erred=erred,
        providers=tuple(providers),
        elapsed=elapsed,
        spent=1_200_000_000,
        budget_left=budget,
    )


def receipt(**changes) -> Receipt:
    fields = dict(
        lines=(ReceiptLine(A, 12.5, 0.0, 1_500_000_000), ReceiptLine(B, 0.25, 3.125, 12 * 10**15)),
        total=12 * 10**15 + 1_500_000_000,
        n_tasks=10,
        elapsed=12.4,
        status="pending",
        graph_id=GRAPH,
        tx_hash=None,
        budget_left=10**18,
        note="",
    )
    fields.update(changes)
    return Receipt(**fields)


# --- format_wei, short_address ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "0 wei"),
        (1, "1 wei"),
        (2_580, "2580 wei"),
        (9_999, "9999 wei"),  # 4 digits: exact, in wei
        (10_000, "0.00001 gwei"),
        (25_804, "0.0000258 gwei"),
        (1_500_000_000, "1.5 gwei"),
        (1_234_567_895, "1.235 gwei"),  # 4 significant digits, half up
        (1_234_449_999, "1.234 gwei"),
        (99_994_999_999_999, "99990 gwei"),
        (99_995_000_000_000, "0.0001 ETH"),  # rounding reaches the ETH range
        (10**14, "0.0001 ETH"),
        (10**16, "0.01 ETH"),
        (123 * 10**14, "0.0123 ETH"),
        (12 * 10**15 + 1_500_000_000, "0.012 ETH"),
        (10**18, "1 ETH"),
        (10**18 + 1, "1 ETH"),
        (12_345_678_901_234_567_890, "12.35 ETH"),
        (123_456 * 10**18, "123500 ETH"),  # no exponent, no separator
        (2**256 - 1, "115800000000000000000000000000000000000000000000000000000000 ETH"),
        (-1_500_000_000, "-1.5 gwei"),
        (-99_995_000_000_000, "-0.0001 ETH"),  # away from zero
    ],
)
def test_format_wei(amount: int, text: str) -> None:
    assert format_wei(amount) == text


def test_exact_wei() -> None:
    assert exact_wei(12_345_678_901_234_567_890) == "12345678901234567890 wei"
    assert format_wei_exact(12_345_678_901_234_567_890) == "12.35 ETH (12345678901234567890 wei)"


def _significant_digits(text: str) -> int:
    return len(text.split()[0].lstrip("-").replace(".", "").strip("0"))


@given(st.integers(min_value=-(10**30), max_value=10**30))
@example(9_999)
@example(99_995)
@example(99_994_999_999_999)
@example(99_995_000_000_000)
@example(-(10**30))
def test_format_wei_keeps_four_significant_digits(amount: int) -> None:
    text = format_wei(amount)
    assert _significant_digits(text) <= 4
    assert "e" not in text.split()[0].lower() and "," not in text
    back = -parse_amount(text[1:]) if text.startswith("-") else parse_amount(text)  # it reads no sign
    assert abs(back - amount) * 2 * 10**4 <= abs(amount) * 10  # relative error at most 5e-4
    magnitude = abs(back)  # the rounded amount chooses the unit
    unit = text.split()[1]
    assert unit == ("wei" if magnitude < 10_000 else "gwei" if magnitude < 10**14 else "ETH")
    if abs(amount) < 10_000:
        assert back == amount


def test_short_address() -> None:
    assert short_address("0x1234" + "0" * 32 + "abcd") == "0x1234…abcd"
    assert short_address("tcp://127.0.0.1:40000") == "tcp://127.0.0.1:40000"
    assert short_address("worker-1") == "worker-1"
    assert short_address("0x1234") == "0x1234"
    assert short_address(GRAPH) == GRAPH  # 66 characters: not an address


# --- display_mode -------------------------------------------------------------------------------


class ZMQInteractiveShell:
    """Stands in for ipykernel's shell, which is recognised by class name."""


class KernelShellSubclass(ZMQInteractiveShell):
    pass


class TerminalInteractiveShell:
    pass


def test_display_mode_follows_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLEM_DISPLAY", raising=False)
    assert display_mode(ZMQInteractiveShell()) == "widgets"
    assert display_mode(KernelShellSubclass()) == "widgets"
    assert display_mode(TerminalInteractiveShell()) == "text"
    assert display_mode(object()) == "text"
    assert display_mode() == "text"  # no IPython shell under pytest


def test_display_mode_needs_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLEM_DISPLAY", raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    assert display_mode(ZMQInteractiveShell()) == "text"


def test_display_mode_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLEM_DISPLAY", "text")
    assert display_mode(ZMQInteractiveShell()) == "text"
    monkeypatch.setenv("GOLEM_DISPLAY", "widgets")
    assert display_mode(TerminalInteractiveShell()) == "widgets"
    monkeypatch.setenv("GOLEM_DISPLAY", "sparkles")
    assert display_mode(ZMQInteractiveShell()) == "widgets"


# --- progress_view, the none view ---------------------------------------------------------------


def test_progress_view_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gd, "display", lambda obj: None)
    stream = io.StringIO()
    text = progress_view("text", title="t", stream=stream)
    assert isinstance(text, TextProgressView) and text.stream is stream and text.title == "t"
    assert progress_view("text").stream is sys.stdout
    assert isinstance(progress_view("widgets", title="t"), WidgetProgressView)
    for mode in ("text", "widgets", "none"):
        assert isinstance(progress_view(mode), ProgressView)
    with pytest.raises(ValueError, match="display mode"):
        progress_view("fireworks")


def test_none_view_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    view = progress_view("none", title="quiet")
    assert isinstance(view, NullProgressView)
    view.update(progress(30.0, 5))
    view.finish(receipt())
    view.settled(receipt(status="confirmed", tx_hash=TX))
    assert capsys.readouterr() == ("", "")
    assert view.receipt == receipt(status="confirmed", tx_hash=TX)


# --- text ---------------------------------------------------------------------------------------


def test_text_view_is_quiet_for_short_graphs() -> None:
    stream = io.StringIO()
    view = TextProgressView("", stream)
    for tick in range(10):
        view.update(progress(tick * 0.19, tick))
    assert stream.getvalue() == ""


def test_text_view_throttles_progress_lines() -> None:
    stream = io.StringIO()
    view = TextProgressView("", stream)
    for tick in range(100):  # 0.0 .. 19.8 s, every 0.2 s
        view.update(progress(round(tick * 0.2, 1), tick // 10, providers=[ProviderProgress(A, 1, 1)] * 3))
    lines = stream.getvalue().splitlines()
    assert [line.split(", ")[2] for line in lines] == ["2.0 s", "7.0 s", "12.0 s", "17.0 s"]
    assert lines[0] == "golem: 1/10 tasks, 3 providers, 2.0 s, spent 1.2 gwei of 0.01 ETH left"
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_text_progress_line_variants() -> None:
    stream = io.StringIO()
    view = TextProgressView("training", stream)
    view.update(progress(3.0, 4, erred=2, providers=[ProviderProgress("worker-1", 4, 0)], budget=None))
    assert stream.getvalue() == "golem: training: 4/10 tasks, 2 erred, 1 provider, 3.0 s\n"


def test_text_receipt_layout() -> None:
    stream = io.StringIO()
    view = TextProgressView("", stream)
    done = receipt(note="Interrupted; what ran is paid.")
    view.finish(done)
    out = stream.getvalue()
    assert out == receipt_text(done) + "\n"
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "golem: receipt: 10 tasks on 2 providers in 12.4 s"
    header, row_a, row_b, total = lines[1:5]
    assert row_a.split() == [A, "12.500", "0.000", "1.5", "gwei", "1500000000"]
    assert row_b.split() == [B, "0.250", "3.125", "0.012", "ETH", "12000000000000000"]
    assert total.split() == ["total", "12.750", "3.125", "0.012", "ETH", "12000001500000000"]
    # Columns line up: every number column ends where its header ends.
    for column in ("cpu s", "gpu s", "amount", "wei"):
        end = header.index(column) + len(column)
        assert all(line[end - 1] != " " and (len(line) == end or line[end] == " ") for line in (row_a, row_b, total))
    assert f"  graph        {GRAPH}" in lines
    assert "  transaction  pending" in lines
    assert "  status       pending (not submitted yet)" in lines
    assert "  budget left  1 ETH (1000000000000000000 wei)" in lines
    assert lines[-1] == "  Interrupted; what ran is paid."


def test_text_receipt_statuses() -> None:
    confirmed = receipt_text(receipt(status="confirmed", tx_hash=TX))
    assert f"transaction  {TX}" in confirmed and "status       confirmed" in confirmed
    assert "failed, will be retried" in receipt_text(receipt(status="failed"))
    free = receipt_text(receipt(status="nothing to pay", lines=(), total=0))
    assert "transaction  none" in free and "nothing to pay" in free
    assert "budget left" not in receipt_text(receipt(budget_left=None))


def test_text_local_receipt() -> None:
    stream = io.StringIO()
    view = TextProgressView("", stream)
    view.finish(receipt(status="local", lines=(), total=0, n_tasks=12, elapsed=0.8, graph_id=None, budget_left=None))
    assert stream.getvalue() == "golem: ran 12 tasks on the local cluster in 0.8 s (no payment).\n"
    one = receipt(status="local", n_tasks=1, elapsed=0.8, note="Interrupted; what ran is paid.")
    assert receipt_text(one).splitlines() == [
        "golem: ran 1 task on the local cluster in 0.8 s (no payment).",
        "golem: Interrupted; what ran is paid.",
    ]


def test_text_settled_prints_nothing_but_keeps_the_receipt() -> None:
    stream = io.StringIO()
    view = TextProgressView("", stream)
    view.finish(receipt())
    printed = stream.getvalue()
    later = receipt(status="confirmed", tx_hash=TX)
    thread = threading.Thread(target=view.settled, args=(later,))
    thread.start()
    thread.join()
    assert stream.getvalue() == printed
    assert view.receipt == later


# --- html ---------------------------------------------------------------------------------------


def test_receipt_html_escapes_hostile_strings() -> None:
    hostile = receipt(
        lines=(ReceiptLine('"><img src=x onerror=alert(1)>', 1.0, 0.0, 5),),
        note="<script>alert('paid')</script>",
        graph_id="<b>graph</b>",
    )
    out = receipt_html(hostile)
    assert "<script>" not in out and "<img" not in out and "<b>graph" not in out
    assert "&lt;script&gt;alert(&#x27;paid&#x27;)&lt;/script&gt;" in out
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in out


def test_receipt_html_content() -> None:
    out = receipt_html(receipt(status="confirmed", tx_hash=TX))
    assert f'title="{A}"' in out and short_address(A) in out
    assert f'title="{B}"' in out
    assert '<span title="1500000000 wei">1.5 gwei</span>' in out
    assert '<span title="12000000000000000 wei">0.012 ETH</span>' in out
    assert '<span title="12000001500000000 wei">0.012 ETH</span>' in out  # the total
    assert '<span title="1000000000000000000 wei">1 ETH</span>' in out  # budget left
    # One click away: the exact amounts per provider and in total.
    details = out[out.index("<details>") : out.index("</details>")]
    assert "<summary>amounts in wei</summary>" in details
    assert f"<code>{A}</code></td><td><code>1500000000</code>" in details
    assert f"<code>{B}</code></td><td><code>12000000000000000</code>" in details
    assert "<th>total</th><th><code>12000001500000000</code>" in details
    assert TX in out and GRAPH in out and "confirmed" in out
    local = receipt_html(receipt(status="local", n_tasks=3, elapsed=0.5))
    assert "Ran 3 tasks on the local cluster in 0.5 s (no payment)." in local and "<table>" not in local


# --- widgets ------------------------------------------------------------------------------------


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the widget view passed to IPython's display()."""
    calls: list[object] = []
    monkeypatch.setattr(gd, "display", calls.append)
    return calls


def test_widget_view_displays_once_on_first_update(shown: list[object]) -> None:
    view = WidgetProgressView("training")
    assert shown == []
    assert isinstance(view.box, ipywidgets.VBox)
    view.update(progress(0.2, 0, providers=[ProviderProgress(A, 0, 2)]))
    view.update(progress(0.4, 1, providers=[ProviderProgress(A, 1, 2)]))
    view.finish(receipt())
    assert shown == [view.box]


def test_widget_view_progress_rows(shown: list[object]) -> None:
    view = WidgetProgressView("training")
    view.update(progress(0.2, 1, providers=[ProviderProgress(A, 1, 2)]))
    assert list(view.rows) == [A]
    row = view.rows[A]
    assert (row.bar.value, row.bar.max) == (1, 10)
    assert row.name.value == short_address(A) and row.name.tooltip == A
    assert row.count.value == "1/10 (2 running)"
    assert view.rows_box.children == (row.box,)

    view.update(progress(5.0, 6, erred=1, providers=[ProviderProgress(A, 4, 1), ProviderProgress(B, 2, 3)]))
    assert list(view.rows) == [A, B]
    assert view.rows_box.children == (view.rows[A].box, view.rows[B].box)
    assert (view.rows[A].bar.value, view.rows[B].bar.value) == (4, 2)
    assert view.rows[B].count.value == "2/10 (3 running)"
    assert (view.overall.value, view.overall.max) == (6, 10)
    assert view.overall.bar_style == "warning"
    assert view.overall_count.value == "6/10, 1 erred"
    assert "training" in view.header.value and "5.0 s" in view.header.value
    assert (
        'spent <span title="1200000000 wei">1.2 gwei</span> of <span title="10000000000000000 wei">0.01 ETH</span> left'
        in view.header.value
    )


def test_widget_view_finish_success(shown: list[object]) -> None:
    view = WidgetProgressView()
    view.update(progress(1.0, 10, providers=[ProviderProgress(A, 7, 0), ProviderProgress(B, 3, 0)]))
    done = receipt()
    view.finish(done)
    bars = [view.overall, view.rows[A].bar, view.rows[B].bar]
    assert [bar.bar_style for bar in bars] == ["success"] * 3
    assert [bar.value for bar in bars] == [10, 7, 3]
    assert view.box.children[-1] is view.receipt_widget
    assert view.receipt_widget.value == receipt_html(done)
    assert (
        'spent <span title="12000001500000000 wei">0.012 ETH</span>, '
        '<span title="1000000000000000000 wei">1 ETH</span> left' in view.header.value
    )
    assert view.receipt == done


def test_widget_view_finish_with_errors(shown: list[object]) -> None:
    view = WidgetProgressView()
    view.update(progress(1.0, 8, erred=2, providers=[ProviderProgress(A, 8, 0)]))
    view.finish(receipt())
    assert view.overall.bar_style == "danger" and view.rows[A].bar.bar_style == "danger"


def test_widget_view_finish_without_updates(shown: list[object]) -> None:
    view = WidgetProgressView()
    view.finish(receipt(status="local", n_tasks=4, elapsed=0.3, budget_left=None))
    assert shown == [view.box]
    assert (view.overall.value, view.overall.max, view.overall.bar_style) == (4, 4, "success")
    assert "Ran 4 tasks on the local cluster" in view.receipt_widget.value


def test_widget_view_settled_from_another_thread(shown: list[object]) -> None:
    view = WidgetProgressView()
    view.update(progress(1.0, 10, providers=[ProviderProgress(A, 10, 0)]))
    view.finish(receipt())
    children = view.box.children
    header = view.header.value
    later = receipt(status="confirmed", tx_hash=TX)
    thread = threading.Thread(target=view.settled, args=(later,))
    thread.start()
    thread.join()
    assert view.receipt_widget.value == receipt_html(later)
    assert TX in view.receipt_widget.value
    assert view.box.children == children and view.header.value == header
    assert view.receipt == later
    assert shown == [view.box]


def test_offer_table_html_gives_the_exact_prices_on_hover() -> None:
    from golem_jupyter.chain import Offer
    from golem_jupyter.notebook.display import OfferTable

    offer = Offer("tcp://h:1", provider=A, price_per_cpu_second=25_804, price_per_gpu_second=10**10)
    html = OfferTable([offer], "devnet", {}, set())._repr_html_()
    assert '<td><span title="25804 wei">0.0000258 gwei</span></td>' in html
    assert '<td><span title="10000000000 wei">10 gwei</span></td>' in html
    assert f"<td>{A}</td>" in html and "<td>tcp://h:1</td>" in html


def test_offer_table_shows_faults_on_chain_and_in_the_users_ledger_next_to_reputation() -> None:
    from golem_jupyter.chain import Offer
    from golem_jupyter.notebook.display import OfferTable

    clean, faulty = "0x" + "b2" * 20, "0x" + "c3" * 20
    offers = [Offer("tcp://h:1", 1, provider=p) for p in (A, clean, faulty)]
    table = OfferTable(offers, "devnet", {clean: 1.0, faulty: 2 / 7}, set(), {clean: 0, faulty: 1}, {faulty})
    lines = repr(table).splitlines()
    assert re.search(r"\breputation +faults +sandbox\b", lines[1]), lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert re.search(r"\bnew +0 +none\b", rows[A]), rows[A]
    assert re.search(r"\b1\.00 +0 +none\b", rows[clean]), rows[clean]
    assert re.search(r"\b0\.29 +1 \(reported by you\) +none\b", rows[faulty]), rows[faulty]
    html = table._repr_html_()
    assert "<th>reputation</th><th>faults</th><th>sandbox</th>" in html
    assert "<td>new</td><td>0</td><td>none</td>" in html
    assert "<td>0.29</td><td>1 (reported by you)</td><td>none</td>" in html
    # Older callers pass no faults: every provider shows 0.
    assert re.search(r"\bnew +0 +none\b", repr(OfferTable(offers, "devnet", {}, set())).splitlines()[2])
