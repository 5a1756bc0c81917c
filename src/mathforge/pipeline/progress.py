"""Progress of long stages: a live bar (rate, tokens/s, ETA) in a terminal, periodic plain lines in a log or CI.

rich draws nothing live when stderr is not a terminal, so a log showed a stage's progress only when it ended; there
``PlainProgress`` prints one line per task every ``MATHFORGE_PROGRESS_SECONDS`` (default 15) and when it finishes.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per minute and output tokens per second, from the task's own counters."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if not elapsed or not task.completed:
            return Text("-- /min", style="progress.data.speed")
        per_min = task.completed / elapsed * 60
        toks = task.fields.get("tokens", 0) / elapsed
        extra = task.fields.get("extra", "")
        return Text(f"{per_min:,.0f}/min {toks:,.0f} tok/s {extra}".rstrip(), style="progress.data.speed")


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=4,
    )


class PlainProgress:
    """The subset of ``rich.progress.Progress`` the stages use, printed as plain lines at a fixed interval."""

    def __init__(self, every: float | None = None, out: Console | None = None):
        self.every = every if every is not None else float(os.environ.get("MATHFORGE_PROGRESS_SECONDS", "15"))
        self.out = out or console
        self.tasks: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        for tid, t in self.tasks.items():
            if t["printed"] != t["completed"]:
                self._line(tid)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        with self._lock:
            tid = len(self.tasks)
            now = time.monotonic()
            self.tasks[tid] = {"description": description, "total": total, "completed": 0, "fields": dict(fields),
                               "start": now, "last": now, "printed": None}
        return tid

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None, **fields: Any) -> None:
        with self._lock:
            t = self.tasks[task_id]
            t["completed"] = completed if completed is not None else t["completed"] + advance
            t["fields"].update(fields)
            now = time.monotonic()
            due = now - t["last"] >= self.every or (t["total"] is not None and t["completed"] >= t["total"])
            if due:
                t["last"] = now
                self._line(task_id)

    def _line(self, task_id: int) -> None:
        t = self.tasks[task_id]
        t["printed"] = t["completed"]
        elapsed = time.monotonic() - t["start"]
        done, total = t["completed"], t["total"]
        parts = [f"{t['description']}: {done:,.0f}" + (f"/{total:,.0f} ({done / total:.0%})" if total else "")]
        if elapsed and done:
            parts.append(f"{done / elapsed * 60:,.0f}/min")
            if t["fields"].get("tokens"):
                parts.append(f"{t['fields']['tokens'] / elapsed:,.0f} tok/s")
            if total and done < total:
                parts.append(f"eta {(total - done) * elapsed / done:,.0f} s")
        parts.append(f"{elapsed:,.0f} s")
        if t["fields"].get("extra"):
            parts.append(str(t["fields"]["extra"]))
        self.out.print(" · ".join(parts), highlight=False, soft_wrap=True)


@contextmanager
def progress_bar() -> Iterator[Progress | PlainProgress]:
    """A live bar when stderr is a terminal, else periodic plain lines."""
    if not console.is_terminal:
        with PlainProgress() as plain:
            yield plain
        return
    with make_progress() as prog:
        yield prog


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
