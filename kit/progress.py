"""Feedback while kit follows orders: one live display in a Jupyter cell, a bar on an interactive terminal,
a few lines on standard error anywhere else (cron, CI, a pipe).

The engine calls `Progress.observe` after every batch of events; what is shown is redrawn at most every
INTERVAL seconds, so a run of 10,000 orders pays for a few hundred redraws, not for one per fill. In Jupyter
the display is one output updated in place (a display id), so a notebook saved by papermill or nbclient
holds one line with the run's final state, not one per update. The terminal bar is tqdm's.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from html import escape
from typing import Literal, Protocol

from kit import clock
from kit.model import Order

Mode = Literal["auto", "notebook", "bar", "log", "off"]
MODES = ("auto", "notebook", "bar", "log", "off")
INTERVAL = 0.2  # seconds between redraws of a live display
TICK = 1.0  # seconds without broker events after which the elapsed time is redrawn
LOG_EVERY = 15.0  # seconds between lines where nothing redraws in place


@dataclass(frozen=True)
class Snapshot:
    """How far a run has got: orders that can no longer fill, orders working at the broker, what filled."""

    orders: int
    done: int
    working: int
    filled: float  # shares (units), summed over every order
    notional: float  # quantity x price x multiplier of the fills, summed (in the orders' own currencies)
    elapsed: float

    @classmethod
    def of(cls, orders: Iterable[Order], elapsed: float) -> Snapshot:
        """From each order's own figures (kit.model.Order.fill_totals: the one place fills are added up), read
        once per order: a 100,000-order basket is drawn again every INTERVAL, and reading the average and
        the quantity by their own properties took ~1 s a drawing (each adds the fills up again)."""
        count = done = working = 0
        filled, notional = [], []
        for order in orders:
            count += 1
            if not order.can_fill:
                done += 1
            elif order.working:
                working += 1
            if order.fills:
                quantity, _, average, _ = order.fill_totals()
                if average is not None:
                    filled.append(quantity)
                    notional.append(quantity * average * (order.intent.multiplier or 1.0))
        return cls(orders=count, done=done, working=working, filled=math.fsum(filled),
                   notional=math.fsum(notional), elapsed=elapsed)

    def line(self) -> str:
        return (f"{self.done}/{self.orders} orders done, {self.working} working, {self.filled:,.0f} shares "
                f"filled, notional {self.notional:,.2f}, {self.elapsed:.1f}s")


class View(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...
    def close(self, snapshot: Snapshot, status: str) -> None: ...


class NotebookView:
    """One output in the cell, updated in place: an HTML <progress> bar and a plain-text line."""

    def __init__(self) -> None:
        from IPython.display import display

        self.handle = display(self._bundle(None, "starting"), raw=True, display_id=True)

    @staticmethod
    def _bundle(snapshot: Snapshot | None, status: str) -> dict[str, str]:
        line = f"kit: {status}" + (f": {snapshot.line()}" if snapshot else "")
        done, total = (snapshot.done, snapshot.orders) if snapshot else (0, 1)
        bar = f'<progress value="{done}" max="{max(total, 1)}" style="width:16em"></progress>'
        return {"text/plain": line,
                "text/html": f'<div class="kit-progress">{bar} <code>{escape(line)}</code></div>'}

    def update(self, snapshot: Snapshot) -> None:
        self.handle.update(self._bundle(snapshot, "following orders"), raw=True)

    def close(self, snapshot: Snapshot, status: str) -> None:
        self.handle.update(self._bundle(snapshot, status), raw=True)


class BarView:
    """tqdm's bar on standard error, counting orders done, with the rest as its postfix."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, snapshot: Snapshot) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=snapshot.orders, unit="order", desc="kit", file=sys.stderr, leave=True,
                            dynamic_ncols=True)
        self.bar.set_postfix_str(f"{snapshot.working} working, {snapshot.filled:,.0f} sh, "
                                 f"{snapshot.notional:,.0f}", refresh=False)
        self.bar.update(snapshot.done - self.bar.n)

    def close(self, snapshot: Snapshot, status: str) -> None:
        self.update(snapshot)
        self.bar.set_description_str(f"kit {status}")
        self.bar.close()


class LogView:
    """A line now and then on standard error: the first, one every LOG_EVERY seconds, and the last."""

    def __init__(self) -> None:
        self.last: float | None = None

    def update(self, snapshot: Snapshot) -> None:
        if self.last is None or snapshot.elapsed - self.last >= LOG_EVERY:
            self.last = snapshot.elapsed
            say(f"kit: following orders: {snapshot.line()}")

    def close(self, snapshot: Snapshot, status: str) -> None:
        say(f"kit: {status}: {snapshot.line()}")


def say(line: str) -> None:
    """One write per line: print() writes the text and its newline apart, and a log line from the engine's
    thread landing between them would join kit's line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def in_notebook() -> bool:
    """True in a Jupyter kernel (JupyterLab, papermill, nbclient), where rich output reaches a cell."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def choose(mode: Mode | bool) -> Mode:
    """progress=True or "auto": a notebook display in a kernel, a bar on a terminal, else log lines."""
    if mode is False:
        return "off"
    if mode is True or mode == "auto":
        if in_notebook():
            return "notebook"
        return "bar" if sys.stderr.isatty() else "log"
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)} (or True/False), not {mode!r}")
    return mode


class Progress:
    """Between the engine (which calls `observe`, possibly in a worker thread) and one View.

    `sink` receives each snapshot to draw; by default the view draws it at once. kit.api passes a queue's
    put when the engine runs in a worker thread, so the caller's thread draws (a Jupyter cell's output
    belongs to the thread running the cell)."""

    def __init__(self, mode: Mode | bool = "auto", sink: Callable[[Snapshot], None] | None = None):
        chosen = choose(mode)
        self.view: View | None = {"notebook": NotebookView, "bar": BarView, "log": LogView,
                                  "off": lambda: None}[chosen]()
        self.sink = sink or self.draw
        self.started = clock.monotonic()
        self.drawn_at = -math.inf
        self.orders: Iterable[Order] = ()
        self.drawn: Snapshot | None = None  # the last snapshot drawn (by the calling thread)

    def observe(self, orders: Iterable[Order]) -> None:
        self.orders = orders  # the engine's live view of its orders: the last one seen is the final state
        now = clock.monotonic()
        if self.view is None or now - self.drawn_at < INTERVAL:
            return
        self.drawn_at = now
        self.sink(Snapshot.of(orders, now - self.started))

    def draw(self, snapshot: Snapshot) -> None:
        if self.view is not None:
            self.drawn = snapshot
            self.view.update(snapshot)

    def tick(self) -> None:
        """No news from the broker for a while: the last state again, with the time that has passed, so a
        run waiting on a resting order is seen to be alive."""
        if self.drawn is not None:
            self.draw(replace(self.drawn, elapsed=clock.monotonic() - self.started))

    def close(self, status: str) -> None:
        """The final state, once the engine has stopped (so its orders no longer change)."""
        if self.view is not None:
            self.view.close(Snapshot.of(self.orders, clock.monotonic() - self.started), status)
