"""Live progress bars (rate, tokens/s, ETA) for long stages; quiet when output is not a terminal."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

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


@contextmanager
def progress_bar() -> Iterator[Progress]:
    with make_progress() as prog:
        yield prog


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
