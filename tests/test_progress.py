"""Progress in a log: plain lines at an interval and at the end, never a redrawn bar."""

from __future__ import annotations

import io

from rich.console import Console

from mathforge.pipeline import progress
from mathforge.pipeline.progress import PlainProgress


def test_plain_progress_prints_lines_at_its_interval_and_the_end():
    buf = io.StringIO()
    out = Console(file=buf, width=200, force_terminal=False)
    with PlainProgress(every=3600, out=out) as prog:
        task = prog.add_task("generate t", total=4, tokens=0, extra="")
        prog.update(task, advance=1, tokens=10)
        prog.update(task, advance=2, tokens=30)
        assert buf.getvalue() == ""  # inside the interval: nothing yet
        prog.update(task, advance=1, tokens=40)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("generate t: 4/4 (100%)") and "tok/s" in lines[0]
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()

    buf.truncate(0), buf.seek(0)
    with PlainProgress(every=0, out=out) as prog:
        task = prog.add_task("eval", total=10)
        for _ in range(3):
            prog.update(task, advance=1)
    lines = buf.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["eval: 1/10 (10%)", "eval: 2/10 (20%)", "eval: 3/10 (30%)"]
    assert "eta" in lines[0]


def test_progress_bar_is_plain_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "console", Console(file=io.StringIO(), force_terminal=False))
    with progress.progress_bar() as prog:
        assert isinstance(prog, PlainProgress)
