"""Ledger frames as people and scripts read them: a terminal table (rich), JSON or CSV.

The terminal table is for eyes: it fits the terminal's width (long text wraps inside its cell instead of
widening the table), shows timestamps to the second, whole-share quantities without `.0`, prices without
float noise, and a blank where a value is unknown. JSON and CSV are for scripts: the same rows and columns
with full-precision values, ISO 8601 timestamps and null (JSON) or an empty field (CSV) for unknowns.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

Format = Literal["table", "json", "csv"]


def blank(value: Any) -> bool:
    """None, NaN and NaT: a value the ledger does not know."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):
        return False


def timestamp(value: Any) -> str:
    return "" if blank(value) else f"{value:%Y-%m-%d %H:%M:%S}"


def quantity(value: Any) -> str:
    """Whole shares as integers (1153, not 1153.0); a fractional quantity (FX, a split) as it is."""
    if blank(value):
        return ""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


def price(value: Any) -> str:
    """At least cents, at most six decimals, no float noise: 190.00, 1.08345, 0.000125."""
    if blank(value):
        return ""
    text = f"{value:,.6f}".rstrip("0")
    decimals = len(text.partition(".")[2])
    return text + "0" * max(0, 2 - decimals)


def text(value: Any) -> str:
    return "" if blank(value) else str(value)


def path(value: Any) -> str:
    """A path relative to the working directory when it is below it: the full path is in --json."""
    if blank(value):
        return ""
    try:
        return str(Path(value).relative_to(Path.cwd()))
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class Column:
    """One column: the ledger's name, its header, how a cell reads, and whether it is a number (right)."""

    name: str
    header: str
    show: Callable[[Any], str] = text
    numeric: bool = False
    wrap: bool = False  # free text (errors, reasons) wraps inside the cell; ids and numbers never do
    drop: int = 0  # when the table is too wide, columns with the highest `drop` go first; 0 stays


def render(frame: pd.DataFrame, columns: Sequence[Column], form: Format = "table",
           title: str | None = None, hidden_note: str = "--json has every column") -> None:
    """Print `frame` (already filtered, sorted and limited) in `form` to standard output.

    A terminal table that leaves columns out to fit says which, followed by `hidden_note`.
    """
    present = [c for c in columns if c.name in frame.columns]
    rows = [dict(zip(frame.columns, values, strict=True)) for values in frame.itertuples(index=False)]
    if form == "json":
        records = [{c.name: _plain(row[c.name]) for c in present} for row in rows]
        print(json.dumps(records, indent=2))
    elif form == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([c.name for c in present])
        for row in rows:
            writer.writerow(["" if blank(row[c.name]) else _plain(row[c.name]) for c in present])
    elif not rows:
        print("(none)")
    else:
        _print_table([[c.show(row[c.name]) for c in present] for row in rows], present, title, hidden_note)


def _print_table(cells: list[list[str]], columns: Sequence[Column], title: str | None, note: str) -> None:
    """A table as wide as the terminal. Numbers and ids are never cut: columns marked `drop` are left out,
    most droppable first, until the rest fits (a note says which; --json has them all); only then does
    text fold onto more lines."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)

    def needs(i: int) -> int:
        """Columns that never wrap need their widest cell; free text, its longest word (at most 20)."""
        texts = [columns[i].header, *(row[i] for row in cells)]
        if columns[i].wrap:
            return max(min(cell_len(word), 20) for text in texts for word in (text.split() or [""]))
        return max(cell_len(text) for text in texts)

    keep = list(range(len(columns)))
    droppable = sorted((i for i in keep if columns[i].drop), key=lambda i: -columns[i].drop)
    width = {i: needs(i) for i in keep}
    while sum(width[i] for i in keep) + 2 * (len(keep) - 1) > console.width and droppable:
        keep.remove(droppable.pop(0))
    fits = sum(width[i] for i in keep) + 2 * (len(keep) - 1) <= console.width
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for i in keep:
        c = columns[i]
        whole = c.numeric or (fits and not c.wrap)  # a number is never folded, even in a narrow terminal
        table.add_column(c.header, justify="right" if c.numeric else "left", overflow="fold",
                         no_wrap=whole, min_width=width[i] if whole else None)
    for row in cells:
        table.add_row(*[row[i] for i in keep])
    console.print(table)
    if hidden := [c.header for i, c in enumerate(columns) if i not in keep]:
        print(textwrap.fill(f"(not shown, to fit {console.width} columns: {', '.join(hidden)}; {note})",
                            console.width))


def _plain(value: Any) -> Any:
    """A JSON/CSV value: ISO timestamps, null for unknowns, whole numbers as integers."""
    if blank(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value
