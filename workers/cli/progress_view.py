"""How ``submit --wait`` and ``demo`` show per-object progress on stderr.

On a terminal: ``rich`` live bars. The former hand-made view moved the cursor up one line per
object, so any line the terminal wrapped (a long key, an error text) left a stale copy behind
on every redraw; rich measures what it drew and crops each row to the width (ellipsis), so a
row is always one screen line.

Anything else (CI logs, pipes, ``TERM=dumb``): one plain line per change, no escape codes.
rich does not give that on its own: a non-terminal ``Live`` prints only the final frame, and a
non-terminal ``Console`` hard-wraps at 80 columns, splitting one change over several lines.
The choice follows ``stream.isatty()``, not rich's ``FORCE_COLOR``/``TTY_COMPATIBLE`` hints,
so a CI job that forces colour for other tools still gets plain lines.

Names are object keys, which may hold newlines, escape sequences or ``[markup]``: they are
shown with control characters escaped and never parsed as rich markup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column

from schemas.progress import ObjectProgress, ObjectState

NAME_WIDTH = 32
# Narrower on a terminal, where the elapsed-time column takes room: 80 columns still show counts.
LIVE_NAME_WIDTH = 28
ERROR_CHARS = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ProgressView(Protocol):
    def update(self, states: Mapping[str, ObjectProgress | None]) -> None: ...


def printable(text: str) -> str:
    """``text`` on one line: control characters (newline, ESC, ...) shown as escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def fit(name: str, width: int = NAME_WIDTH) -> str:
    """At most ``width`` characters, eliding the middle: key prefixes and extensions both tell."""
    name = printable(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[len(name) - (width - 1 - head) :]}"


def status_text(prog: ObjectProgress | None) -> str:
    """State and counts, e.g. ``decoded  3/8 embedded, 5 captioned``."""
    if prog is None:
        return "queued"
    total = prog.segments_total if prog.segments_total is not None else "?"
    tail = f" error={printable(prog.error)[:ERROR_CHARS]}" if prog.error else ""
    spoken = f", {prog.transcribed} transcribed" if prog.transcribed else ""
    return f"{prog.state.value:<8} {prog.embedded}/{total} embedded, {prog.captioned} captioned{spoken}{tail}"


def render_line(name: str, prog: ObjectProgress | None, width: int = 24) -> str:
    """One object as one plain line (no escapes), with a ``#`` bar of embedded segments."""
    total = prog.segments_total if prog is not None else None
    frac = (prog.embedded / total) if prog is not None and total else 0.0
    return f"{fit(name):<{NAME_WIDTH}} [{'#' * int(min(frac, 1.0) * width):<{width}}] {status_text(prog)}"


class ChangeLines:
    """Plain text: a line for an object whenever its line differs from the one last written."""

    def __init__(self, names: Mapping[str, str], stream: TextIO) -> None:
        self._names = names
        self._stream = stream
        self._last: dict[str, str] = {}

    def update(self, states: Mapping[str, ObjectProgress | None]) -> None:
        for oid, prog in states.items():
            line = render_line(self._names.get(oid, oid), prog)
            if self._last.get(oid) != line:
                self._stream.write(line + "\n")
                self._last[oid] = line
        self._stream.flush()


class LiveBars:
    """rich bars, one row per object; rows are cropped to the terminal width, never wrapped."""

    def __init__(self, names: Mapping[str, str], progress: Progress) -> None:
        self._names = names
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def update(self, states: Mapping[str, ObjectProgress | None]) -> None:
        for oid, prog in states.items():
            task = self._tasks.get(oid)
            if task is None:
                task = self._tasks[oid] = self._progress.add_task(
                    fit(self._names.get(oid, oid), LIVE_NAME_WIDTH), total=None, status=status_text(prog)
                )
            if prog is None:
                continue  # queued: the bar pulses until the decoder says how many segments
            if prog.segments_total:
                self._progress.update(task, total=prog.segments_total, completed=prog.embedded)
            elif prog.finished:  # ended before a segment count (skipped, failed early, empty)
                self._progress.update(task, total=1, completed=int(prog.state is ObjectState.DONE))
            self._progress.update(task, status=status_text(prog))
            if prog.finished:
                self._progress.stop_task(task)  # freeze its elapsed time


def rich_bars(console: Console) -> Progress:
    """Columns: name, bar, elapsed, status; the text columns crop with an ellipsis."""
    return Progress(
        TextColumn(
            "{task.description}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", max_width=LIVE_NAME_WIDTH),
        ),
        BarColumn(bar_width=16, finished_style="green"),  # rich's own green turns grey in 16 colours
        TimeElapsedColumn(),
        TextColumn(
            "{task.fields[status]}", markup=False, table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)
        ),
        console=console,
        refresh_per_second=4,
        expand=True,
    )


def is_interactive(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


@contextmanager
def progress_view(names: Mapping[str, str], stream: TextIO, show: bool = True) -> Iterator[ProgressView | None]:
    """The view for ``stream``: live bars on a terminal, change lines otherwise, None if not shown."""
    if not show:
        yield None
    elif not is_interactive(stream):
        yield ChangeLines(names, stream)
    else:
        with rich_bars(Console(file=stream, force_terminal=True)) as progress:
            yield LiveBars(names, progress)
