"""The run directory and what a stage may touch in it: tables, the ledger, backends, rejects and metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mathforge.backends import Backend, BackendConfig, make_backend
from mathforge.errors import ConfigError
from mathforge.records import PROBLEM_SCHEMA, SAMPLE_SCHEMA, Problem
from mathforge.store import Ledger, append_rejected, read_rows, write_table
from mathforge.store.shards import ShardReader, ShardWriter


class RunContext:
    """One run directory. Stages read the latest table of a kind and write their own ``<stage>.parquet``."""

    def __init__(self, run_dir: str | Path, *, teachers: dict[str, BackendConfig] | None = None, seed: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.teachers = teachers or {}
        self.seed = seed
        self.tables: dict[str, str] = {}  # kind -> file name of the latest table of that kind
        self.metrics: dict[str, dict[str, Any]] = {}
        self._ledger: Ledger | None = None
        self._backends: dict[str, Backend] = {}
        state = self.run_dir / "state.json"
        if state.exists():
            self.tables = json.loads(state.read_text()).get("tables", {})

    # -- storage -------------------------------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.run_dir / "ledger.sqlite")
        return self._ledger

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def _set_table(self, kind: str, name: str) -> None:
        self.tables[kind] = name
        tmp = self.run_dir / ".state.json.tmp"
        tmp.write_text(json.dumps({"tables": self.tables}, indent=1))
        os.replace(tmp, self.run_dir / "state.json")

    def write_problems(self, stage_id: str, problems: list[Problem]) -> Path:
        path = write_table(self.path(f"{stage_id}.parquet"), [p.to_row() for p in problems], PROBLEM_SCHEMA)
        self._set_table("problems", path.name)
        return path

    def write_samples(self, stage_id: str, rows: list[dict[str, Any]]) -> Path:
        path = write_table(self.path(f"{stage_id}.parquet"), rows, SAMPLE_SCHEMA)
        self._set_table("samples", path.name)
        return path

    def writer(self, stage_id: str, kind: str, *, fingerprint: str = "", resume: bool = False,
               rows_per_shard: int | None = None) -> ShardWriter:
        """A shard writer for ``<stage_id>.parquet``; ``commit_table`` switches it in as the latest ``kind``."""
        schema = {"problems": PROBLEM_SCHEMA, "samples": SAMPLE_SCHEMA}.get(kind)
        extra = {"rows_per_shard": rows_per_shard} if rows_per_shard else {}
        return ShardWriter(self.path(f"{stage_id}.parquet"), schema, fingerprint=fingerprint, resume=resume, **extra)

    def commit_table(self, kind: str, writer: ShardWriter) -> Path:
        """Switch a finished shard writer's table in and make it the latest table of ``kind``."""
        path = writer.commit()
        self._set_table(kind, path.name)
        return path

    def reader(self, kind: str) -> ShardReader:
        """The latest table of ``kind`` read in bounded batches (a file or a shard directory)."""
        return ShardReader(self._need(kind))

    def problems(self) -> list[Problem]:
        return [Problem.from_row(r) for r in read_rows(self._need("problems"))]

    def samples(self) -> list[dict[str, Any]]:
        return read_rows(self._need("samples"))

    def has(self, kind: str) -> bool:
        return kind in self.tables and self.path(self.tables[kind]).exists()

    def _need(self, kind: str) -> Path:
        if not self.has(kind):
            producer = {"problems": "load", "samples": "generate"}.get(kind, kind)
            raise ConfigError(f"{self.run_dir}: no {kind} table yet; run a '{producer}' stage before this one")
        return self.path(self.tables[kind])

    def reject(self, stage_id: str, items: list[tuple[dict[str, Any], str]]) -> int:
        """Keep what a stage dropped, with the reason, in rejected.parquet."""
        return append_rejected(self.run_dir, stage_id, items)

    # -- models --------------------------------------------------------------------------------------------------
    def backend(self, teacher: str) -> Backend:
        """The backend of a named teacher, created once per run (the model itself loads lazily)."""
        if teacher not in self.teachers:
            raise ConfigError(f"unknown teacher '{teacher}'; teachers in this recipe: {', '.join(self.teachers) or 'none'}")
        if teacher not in self._backends:
            self._backends[teacher] = make_backend(teacher, self.teachers[teacher])
        return self._backends[teacher]

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
