"""The progress view: one line per change off a terminal, one cropped row per object on one."""

from __future__ import annotations

import io

from rich.console import Console

from schemas.progress import ObjectProgress, ObjectState
from workers.cli.progress_view import ChangeLines, LiveBars, progress_view, rich_bars

# Keys as S3 allows them: far longer than a line, with a newline, an escape sequence, markup.
NAMES = {
    "long": "videos/" + "a-very-long-directory-name/" * 8 + "clip.mp4",
    "hostile": "x\ny\x1b[2J[bold]z.png",
    "plain": "still.png",
}
ERROR = "decode failed: " + "frame 17 is corrupt; " * 100  # ~2000 chars, like a stored error


def _states(embedded: int) -> dict[str, ObjectProgress | None]:
    return {
        "long": ObjectProgress(
            object_id="long", state=ObjectState.DECODED, segments_total=4, embedded=embedded, captioned=4
        ),
        "hostile": ObjectProgress(object_id="hostile", state=ObjectState.FAILED, error=ERROR),
        "plain": None,
    }


def test_off_a_terminal_each_change_is_exactly_one_plain_line() -> None:
    stream = io.StringIO()  # not a tty, like a CI log or a pipe
    with progress_view(NAMES, stream) as view:
        assert isinstance(view, ChangeLines)
        view.update(_states(1))
        view.update(_states(1))  # nothing changed: nothing written
        view.update(_states(2))  # one object changed: one line
    lines = stream.getvalue().split("\n")
    assert lines.pop() == ""
    assert len(lines) == 4, lines
    assert not any(ch in stream.getvalue() for ch in "\x1b\r"), "escape codes in plain output"
    assert lines[0].startswith("videos/") and lines[0].endswith("1/4 embedded, 4 captioned")
    assert lines[1].startswith(r"x\ny\x1b[2J[bold]z.png") and "error=decode failed:" in lines[1]
    assert lines[2].startswith("still.png") and lines[2].endswith("queued")
    assert lines[3].startswith("videos/") and lines[3].endswith("2/4 embedded, 4 captioned")
    assert len({line.index("[") for line in lines if not line.startswith("x")}) == 1, "bars not aligned"


def test_on_a_terminal_every_object_is_one_row_cropped_to_the_width() -> None:
    for width in (40, 80, 200):
        console = Console(file=io.StringIO(), force_terminal=True, width=width)
        bars = rich_bars(console)
        LiveBars(NAMES, bars).update(_states(2))
        rows = console.render_lines(bars.get_renderable(), console.options, pad=False)
        texts = ["".join(segment.text for segment in row) for row in rows]
        assert len(texts) == len(NAMES), (width, texts)
        assert all(len(text) <= width for text in texts), texts
        assert not any("\n" in text or "\x1b" in text for text in texts)
        assert r"x\ny\x1b[2J[bold]z.png" in texts[1], "a key is shown as text, never as markup"
        if width >= 80:
            assert "decoded  2/4 embedded" in texts[0] and "failed" in texts[1] and "queued" in texts[2]


def test_not_shown_means_no_view() -> None:
    with progress_view(NAMES, io.StringIO(), show=False) as view:
        assert view is None
