"""``fleet-factory top``: the terminal control plane.

A live board of one product: whether it is live (and since when it is not), the seats in use,
job counts per stage, the factories and their health, the jobs (holder, lease epoch, priority,
time in stage, and their latest run: outcome, cost, tokens, diff stat), alerts (stalled jobs,
unroutable work, silent factories) and the product's event log (job transitions, alerts and
fleet operations). The operator acts from it on the selected job, the selected factory or the
product's budget; every action says in the status line what was done or why the coordinator
refused it (status, code, message), and the destructive ones ask for confirmation.

Keys (the footer lists them; ``KEY_HELP``): up/down or k/j select, tab moves the cursor between
the jobs and the factories, ``e`` expands the event log, ``q`` quits. On the selected job:
``s`` ship, ``r`` requeue (a reason, optionally a checkpoint), ``x`` reject, ``c`` cancel,
``p`` reprioritize. On the selected factory: ``P`` pause, ``U`` resume, ``D`` drain, ``R``
restart its engines. The product's budget: ``b`` pause, ``B`` resume.

It refreshes through the queue-state gate, like a factory (``factory_cli.top_board``). When a
refresh fails the board keeps the last good data and says it is reconnecting, then stale, and
since when (``factory_cli.top_live``).

Without a terminal (output piped) it prints one snapshot as text and exits; ``--json``
prints one snapshot as JSON. The event feed and the operator actions need an operator token;
with a factory token the board says so and shows the rest.

The logic is pure and tested without a terminal: ``Feed`` gathers snapshots through a client,
``render`` turns one into lines, ``Control`` holds the state between keys and runs the actions
(``factory_cli.top_actions``) through an ``ask`` callback; only ``_curses_main`` and its
helpers touch the terminal.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from factory_cli.top_actions import (
    ACTIONS,
    REASON,
    SPECS,
    Ask,
    Prompt,
    Spec,
    Subject,
    act,
    confirm_prompt,
    run_action,
)
from factory_cli.top_board import (
    EVENTS,
    EVENTS_KEPT,
    FACTORIES,
    FULL_EVERY,
    JOBS,
    METRICS,
    QUEUE_STATE,
    RUNNING,
    STAGES,
    Alert,
    FactoryRow,
    Feed,
    JobRow,
    RequestClient,
    Snapshot,
    TopClient,
    alerts,
    describe_error,
    factory_row,
    follow,
    job_row,
    move,
    needs_full_refresh,
    running,
    selectable,
    stage_counts,
    top_client,
    window,
)
from factory_cli.top_events import event_line
from factory_cli.top_live import STALE_AFTER, link_state
from factory_cli.top_render import SECTIONS, ago, render, snapshot_json

if TYPE_CHECKING:
    import curses

__all__ = [
    "ACTIONS",
    "EVENTS",
    "EVENTS_KEPT",
    "FACTORIES",
    "FULL_EVERY",
    "JOBS",
    "METRICS",
    "QUEUE_STATE",
    "REASON",
    "RUNNING",
    "STAGES",
    "Alert",
    "Control",
    "FactoryRow",
    "Feed",
    "JobRow",
    "RequestClient",
    "Snapshot",
    "TopClient",
    "act",
    "ago",
    "alerts",
    "confirm_prompt",
    "describe_error",
    "edit_line",
    "event_line",
    "factory_row",
    "follow",
    "job_row",
    "move",
    "needs_full_refresh",
    "render",
    "run_top",
    "running",
    "selectable",
    "snapshot_json",
    "stage_counts",
    "top_client",
    "window",
]

EVENTS_PRINTED = 50  # events in the one snapshot printed without a terminal
EVENTS_SHOWN = 8  # events on the board (more with the event pane expanded)
Focus = Literal["jobs", "factories"]
_LABELS = {"reprioritize": "priority", "restart-engine": "restart"}


def _label(spec: Spec) -> str:
    return _LABELS.get(spec.name, spec.name.removeprefix("budget "))


def key_help(focus: Focus, events_open: bool = False) -> list[str]:
    """The footer: how to move, then every action's key, by what it acts on."""
    other = "factories" if focus == "jobs" else "jobs"
    pane = "shrink" if events_open else "expand"
    groups = []
    for target, heading in (("job", "job"), ("factory", "factory"), ("product", "budget")):
        keys = "  ".join(f"{s.key} {_label(s)}" for s in SPECS if s.target == target)
        groups.append(f"{heading}: {keys}")
    return [
        f"[{focus}] up/down select  tab {other}  e {pane} events  q quit",
        " | ".join(groups),
    ]


KEY_HELP = key_help("jobs")


class TopArgs(Protocol):
    @property
    def interval(self) -> float: ...

    @property
    def product(self) -> str | None: ...

    @property
    def json(self) -> bool: ...


# --------------------------------------------------------------------------- the controls


def _no_terminal(prompt: Prompt) -> str | None:
    return None  # nobody to ask: every action is "not done"


class Control:
    """The board between keys: the focus, the selected job and factory (kept on the same row
    as lists re-sort), the status line, the event pane; ``press`` handles one key, running an
    action through ``ask`` (see ``factory_cli.top_actions``). Pure but for the feed and the
    client it is given; ``wall`` is the clock of the status line and the ages."""

    def __init__(
        self,
        feed: Feed,
        client: TopClient,
        *,
        ask: Ask = _no_terminal,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.feed = feed
        self.client = client
        self.ask = ask
        self.wall = wall
        self.stale_after = stale_after
        self.focus: Focus = "jobs"
        self.job_index, self.factory_index = 0, 0
        self.job_id: str | None = None
        self.factory_id: str | None = None
        self.status: str | None = None
        self.events_open = False
        self.due = True  # poll before the next draw
        self.snapshot = feed.snapshot

    # --- data

    def refresh(self) -> Snapshot:
        self.snapshot = self.feed.poll()
        self.due = False
        self._follow()
        return self.snapshot

    def jobs(self) -> list[JobRow]:
        return selectable(self.snapshot)

    def factories(self) -> list[FactoryRow]:
        return list(self.snapshot.factories)

    def _follow(self) -> None:
        jobs, factories = self.jobs(), self.factories()
        self.job_index = follow(jobs, self.job_id, self.job_index)
        self.job_id = jobs[self.job_index].id if jobs else None
        self.factory_index = follow(factories, self.factory_id, self.factory_index)
        self.factory_id = factories[self.factory_index].id if factories else None

    def selected_job(self) -> JobRow | None:
        jobs = self.jobs()
        return jobs[self.job_index] if jobs else None

    def selected_factory(self) -> FactoryRow | None:
        factories = self.factories()
        return factories[self.factory_index] if factories else None

    # --- keys

    def press(self, key: str) -> bool:
        """Handle one key (a character, or ``up``, ``down``, ``tab``); False: quit."""
        if key in ("q", "Q"):
            return False
        if key in ("up", "k", "down", "j"):
            self._move(-1 if key in ("up", "k") else 1)
        elif key == "tab":
            self.focus = "factories" if self.focus == "jobs" else "jobs"
        elif key == "e":
            self.events_open = not self.events_open
        elif key in ACTIONS:
            self._act(ACTIONS[key])
        return True

    def _move(self, delta: int) -> None:
        if self.focus == "jobs":
            jobs = self.jobs()
            self.job_index = move(self.job_index, delta, len(jobs))
            self.job_id = jobs[self.job_index].id if jobs else None
        else:
            factories = self.factories()
            self.factory_index = move(self.factory_index, delta, len(factories))
            self.factory_id = factories[self.factory_index].id if factories else None

    def _subject(self, spec: Spec) -> Subject | None:
        if spec.target == "job":
            return self.selected_job()
        if spec.target == "factory":
            return self.selected_factory()
        return self.feed.product

    def _act(self, spec: Spec) -> None:
        subject = self._subject(spec)
        if subject is None:
            what = {"job": "no job selected", "factory": "no factory selected"}.get(
                spec.target, "the product is unknown (give --product)"
            )
            self._say(f"{spec.name}: {what}")
            return
        outcome = run_action(self.client, spec, subject, self.ask)
        self._say(outcome.status)
        if outcome.sent:
            self.feed.invalidate()
            self.due = True

    def _say(self, text: str) -> None:
        self.status = f"{self.wall().strftime('%H:%M:%S')} {text}"

    # --- the screen

    def state(self) -> str:
        return link_state(self.snapshot.link, self.wall(), self.stale_after)

    def lines(self, rows: int = 40, cols: int = 100) -> list[str]:
        """The board laid out for a terminal of ``rows`` x ``cols``: the keys always on the
        last lines, the job and factory lists bounded by what the rest leaves."""
        footer = key_help(self.focus, self.events_open)
        snap = self.snapshot
        events = max(EVENTS_SHOWN, rows - 24) if self.events_open else EVENTS_SHOWN
        fixed = 3 + 3 + 5 + 2 + len(alerts(snap)) + 2 + events + len(snap.problems)
        fixed += (2 if self.status else 0) + len(footer)
        space = max(4, rows - fixed)
        lists = 2 if self.events_open else None
        lines = render(
            snap,
            selected=self.job_index if self.jobs() else None,
            selected_factory=self.factory_index if self.factories() else None,
            status=self.status,
            width=cols,
            events=events,
            max_factories=lists or max(2, space // 3),
            max_jobs=lists or max(2, space - space // 3),
            now=self.wall(),
            stale_after=self.stale_after,
        )
        room = max(0, rows - len(footer))
        shown = lines[:room]
        padding = [""] * (room - len(shown))  # the keys at the bottom of the terminal
        return [*shown, *padding, *(line[:cols] for line in footer)]


EditResult = Literal["more", "done", "cancel"]


def edit_line(buffer: str, key: str) -> tuple[str, EditResult]:
    """The prompt line after one key: a printable character is added, ``backspace`` takes
    the last one off, ``enter`` ends it, ``escape`` cancels; other keys are ignored."""
    if key == "enter":
        return buffer, "done"
    if key == "escape":
        return buffer, "cancel"
    if key == "backspace":
        return buffer[:-1], "more"
    if len(key) == 1 and key.isprintable():
        return buffer + key, "more"
    return buffer, "more"


# --------------------------------------------------------------------------- the command


def run_top(client: TopClient | RequestClient, args: TopArgs) -> int:
    """Entry point of ``fleet-factory top``. 0 on a clean exit; 1 when nothing could be
    read (the gate failed and the lists were never read). ``args``: ``.interval`` (seconds),
    ``.product`` (shown; the client sends ``X-Fleet-Product``), ``.json`` (absent: false)."""
    board = top_client(client)
    as_json = bool(getattr(args, "json", False))
    # The product shown: the flag's, else the one the client sends (FLEET_PRODUCT).
    product = getattr(args, "product", None) or getattr(client, "product", None)
    feed = Feed(board, product if isinstance(product, str) else None)
    interval = max(0.5, float(getattr(args, "interval", 2.0)))
    stale_after = max(STALE_AFTER, 3 * interval)
    if as_json or not (sys.stdout.isatty() and sys.stdin.isatty()):
        snapshot = feed.poll()
        if as_json:
            print(jsonlib.dumps(snapshot_json(snapshot, stale_after), indent=2, sort_keys=True))
        else:
            width = shutil.get_terminal_size((100, 40)).columns
            print("\n".join(render(snapshot, width=width, events=EVENTS_PRINTED)))
        return 1 if unreadable(snapshot) else 0
    import curses

    try:
        return curses.wrapper(_curses_main, feed, board, interval, stale_after)
    except KeyboardInterrupt:
        return 0


def unreadable(snapshot: Snapshot) -> bool:
    failed = {p.split(":", 1)[0] for p in snapshot.problems}
    return "queue-state" in failed and snapshot.full_at is None


# --------------------------------------------------------------------------- the terminal


def _curses_main(
    screen: curses.window, feed: Feed, client: TopClient, interval: float, stale_after: float
) -> int:  # pragma: no cover - needs a terminal
    import curses

    curses.curs_set(0)
    with contextlib.suppress(AttributeError, curses.error):
        curses.set_escdelay(25)  # Esc cancels a prompt at once
    screen.timeout(200)
    control = Control(
        feed, client, ask=lambda prompt: _ask(screen, prompt), stale_after=stale_after
    )
    next_poll = 0.0
    while True:
        if control.due or time.monotonic() >= next_poll:
            control.refresh()
            next_poll = time.monotonic() + interval
        rows, cols = screen.getmaxyx()
        _draw(screen, control.lines(rows - 1, cols - 1), alarm=control.state() != "live")
        name = _key_name(screen.getch())
        if name is not None and not control.press(name):
            return 0


def _key_name(key: int) -> str | None:  # pragma: no cover - needs a terminal
    import curses

    names = {curses.KEY_UP: "up", curses.KEY_DOWN: "down", 9: "tab"}
    if key in names:
        return names[key]
    return chr(key) if 32 <= key < 127 else None


def _draw(screen: curses.window, lines: Sequence[str], *, alarm: bool) -> None:  # pragma: no cover
    import curses

    screen.erase()
    rows, cols = screen.getmaxyx()
    for y, line in enumerate(lines[: rows - 1]):
        attr = curses.A_REVERSE if line.startswith("  > ") else curses.A_NORMAL
        if line.startswith(SECTIONS) or y == 0:
            attr |= curses.A_BOLD
        if y == 0 and alarm:  # not live: the header stands out
            attr |= curses.A_REVERSE
        with contextlib.suppress(curses.error):  # the bottom-right cell cannot be written
            screen.addnstr(y, 0, line, cols - 1, attr)
    screen.refresh()


def _ask(screen: curses.window, prompt: Prompt) -> str | None:  # pragma: no cover
    """The operator's answer on the bottom line: one key for a confirmation, a line of text
    otherwise (Enter ends it, Esc cancels: None)."""
    import curses

    rows, cols = screen.getmaxyx()
    buffer = ""
    screen.timeout(-1)
    with contextlib.suppress(curses.error):
        curses.curs_set(1)
    try:
        while True:
            screen.move(rows - 1, 0)
            screen.clrtoeol()
            text = prompt.text + buffer
            with contextlib.suppress(curses.error):
                screen.addnstr(rows - 1, 0, text[-(cols - 2) :], cols - 2, curses.A_REVERSE)
            screen.refresh()
            key = screen.get_wch()
            if prompt.question == "confirm":
                return key if isinstance(key, str) else ""
            buffer, result = edit_line(buffer, _text_key(key))
            if result != "more":
                return buffer if result == "done" else None
    finally:
        screen.timeout(200)
        with contextlib.suppress(curses.error):
            curses.curs_set(0)


def _text_key(key: int | str) -> str:  # pragma: no cover - needs a terminal
    import curses

    special = {
        "\n": "enter",
        "\r": "enter",
        curses.KEY_ENTER: "enter",
        "\x1b": "escape",
        "\x7f": "backspace",
        "\b": "backspace",
        curses.KEY_BACKSPACE: "backspace",
    }
    return special.get(key, key if isinstance(key, str) else "")
