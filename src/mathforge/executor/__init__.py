"""Executors: where a recipe's stages run (the local process by default, or a Ray cluster).

A stage hands the executor only the parts that may run elsewhere: a pure function over input shards
(``map_shards``) or over batches in order (``imap``), a teacher's requests (``generate``) and the candidate search
of near-duplicate detection (``band_candidates``). Everything that writes the run directory (shard commits, the
ledger, ``state.json``) stays with the driver, so the executors differ in where work runs, never in what is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Sequence

from mathforge.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from mathforge.backends.base import GenRequest, ResultSink
    from mathforge.pipeline.context import RunContext
    from mathforge.store.shards import ShardReader, ShardWriter

ExecutorKind = Literal["local", "ray"]
KINDS = ("local", "ray")
Rows = list[dict[str, Any]]


class LocalExecutor:
    """Everything in this process: the behaviour of mathforge without an executor."""

    kind = "local"

    def map_shards(self, reader: "ShardReader", writer: "ShardWriter", fn: Callable[[Rows], Rows],
                   after: Callable[["pa.Table"], None] | None = None) -> dict[str, int]:
        """Input shard i -> output shard i through ``fn`` (pure, a batch of rows at a time); ``after`` sees each
        written output batch (the driver's tallies). Shards already done are skipped."""
        from mathforge.store.shards import map_shards

        return map_shards(reader, writer, fn, after=after)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn`` (pure) over ``items``, lazily and in order: one item in memory at a time."""
        return map(fn, items)

    def generate(self, ctx: "RunContext", teacher: str, requests: Sequence["GenRequest"], sink: "ResultSink") -> None:
        """Answer a teacher's requests with its backend in this process."""
        ctx.backend(teacher).generate(requests, sink)

    def prepare(self, ctx: "RunContext", teachers: list[str]) -> None:
        """Load the teachers' weights before timing starts (they then answer at once)."""
        for teacher in teachers:
            ctx.backend(teacher).prepare()

    def band_candidates(self, chunks: Callable[[], Any], n: int, bands: int) -> dict[int, set[int]]:
        """Near-duplicate candidates from LSH band keys (see ``curate.dedup.near_duplicates``)."""
        from mathforge.curate.dedup import candidates_in

        return candidates_in(chunks, n, bands)

    def teacher_config(self, config: Any) -> Any:
        """A teacher's config as it runs here (unchanged: ``device: auto`` is decided in this process)."""
        return config

    def end_stage(self) -> None:
        """Nothing held between stages."""

    def close(self) -> None:
        """Nothing to release."""


def make_executor(kind: str = "local", address: str | None = None) -> Any:
    """The executor a recipe names: ``local`` (default, needs nothing) or ``ray`` (needs ``mathforge[ray]``)."""
    if kind == "local":
        if address:
            raise ConfigError("--address is a Ray cluster's address: use it with --executor ray")
        return LocalExecutor()
    if kind == "ray":
        from mathforge.executor.ray_executor import RayExecutor

        return RayExecutor(address)
    raise ConfigError(f"unknown executor '{kind}'; valid executors: {', '.join(KINDS)}")


__all__ = ["KINDS", "ExecutorKind", "LocalExecutor", "make_executor"]
