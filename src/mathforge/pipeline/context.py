"""The run directory and what a stage may touch in it: its inputs and outputs, the ledger, backends, rejects.

A ``RunContext`` is the one writer of its run directory (it holds the directory's lock from creation to ``close``).
Stages reach tables only through ``ctx.input(name)`` / ``ctx.output(name)``; ``run_stage`` resolves the inputs from
the lineage in ``state.json``, commits the outputs when the stage returns and records what was read and written.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from mathforge.backends import Backend, BackendConfig, make_backend
from mathforge.errors import ConfigError, DataError, IncompleteRunError
from mathforge.pipeline.io import DirWriter, FileWriter, InPlace, TableReader, TableWriter, clean_leftovers
from mathforge.pipeline.lock import RunLock
from mathforge.pipeline.state import RunState, TableRef
from mathforge.records import PROBLEM_SCHEMA, SAMPLE_SCHEMA, Problem, Sample
from mathforge.store import Ledger, append_rejected
from mathforge.store.shards import ShardReader, ShardWriter

if TYPE_CHECKING:
    from mathforge.pipeline.stages import Port, Stage

SCHEMAS = {"problems": PROBLEM_SCHEMA, "samples": SAMPLE_SCHEMA}
LEDGER_FILE = "ledger.sqlite"


@dataclass
class StageScope:
    """The stage being run: its resolved inputs, the writers of its outputs, and what it could not get answered."""

    stage: "Stage"
    inputs: dict[str, TableRef]
    writers: dict[str, ShardWriter | TableWriter | DirWriter | FileWriter | InPlace] = field(default_factory=dict)
    failed: int = 0  # requests that failed for good
    unsent: int = 0  # requests left pending (budget cap, a teacher that stopped)
    partial_inputs: list[str] = field(default_factory=list)  # inputs that came from incomplete stages


class RunContext:
    """One run directory, opened for writing. Use as a context manager, or call ``close``."""

    def __init__(self, run_dir: str | Path, *, teachers: dict[str, BackendConfig] | None = None, seed: int = 0,
                 allow_partial: bool = False, new_ledger: bool = False, shared: bool = False):
        """``shared``: take no writer's lock, for helper processes that read tables and use the ledger (SQLite
        serialises their requests) beside the one writer; such a context can never commit a stage output."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.shared = shared
        self.lock = RunLock(self.run_dir)
        if not shared:
            self.lock.acquire()
        try:
            if not shared:
                clean_leftovers(self.run_dir)
            self.state = RunState(self.run_dir)
        except BaseException:
            self.lock.release()
            raise
        self.teachers: dict[str, BackendConfig] = teachers or {}
        self.seed = seed
        self.allow_partial = allow_partial
        self.new_ledger = new_ledger
        self.metrics: dict[str, dict[str, Any]] = {}
        self._ledger: Ledger | None = None
        self._backends: dict[str, Backend] = {}
        self.scope: StageScope | None = None
        # Where stage work runs (``mathforge.executor``): this process unless the recipe says ``executor: ray``.
        from mathforge.executor import LocalExecutor

        self.executor: Any = LocalExecutor()

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def tables(self) -> dict[str, str]:
        """Kind -> file of the final table of each kind, in lineage order (for readers of the whole run)."""
        return self.state.latest_tables()

    # -- the ledger ----------------------------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self._open_ledger()
        return self._ledger

    def _open_ledger(self) -> Ledger:
        path = self.path(LEDGER_FILE)
        lost = not path.exists() or path.stat().st_size == 0
        if lost and self.state.ledger_ok and not self.new_ledger:
            state = "missing" if not path.exists() else "empty (0 bytes)"
            raise DataError(
                f"is {state}, but this run's state.json records {self.state.ledger_ok:,} answered requests in it; "
                "going on would pay for every one of them again. Restore ledger.sqlite (with its -wal file) from a "
                "backup, or, to start a fresh ledger and knowingly pay again, rerun with --new-ledger",
                file=str(path))
        try:
            ledger = Ledger(path)
            ok = ledger.counts().get("ok", 0)
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"not a readable SQLite ledger ({exc}). It holds every paid response: restore it from a backup, or "
                "move it aside and rerun with --new-ledger to start a fresh one (every request is then paid again)",
                file=str(path)) from None
        if ok < self.state.ledger_ok and not self.new_ledger:
            ledger.close()
            raise DataError(
                f"holds {ok:,} answered requests but this run's state.json records {self.state.ledger_ok:,}: it was "
                "replaced or truncated, and the missing answers would be paid again. Restore the right ledger, or "
                "rerun with --new-ledger to go on with this one", file=str(path))
        if self.new_ledger:
            self.state.ledger_ok = ok
        return ledger

    # -- stage I/O -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: "Stage", cfg: Any, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``body`` as stage ``stage``: resolve its inputs, commit its outputs atomically, record the lineage."""
        self._writable()
        if self.scope is not None:
            if self.scope.stage is stage:  # run() calling itself through a subclass: one scope
                return body()
            raise RuntimeError(f"stage {stage.stage_id} started inside stage {self.scope.stage.stage_id}")
        scope = StageScope(stage, self._resolve(stage))
        self.scope = scope
        try:
            metrics = body() or {}
            outputs = {}
            for name, writer in scope.writers.items():
                committed = writer.commit()
                where = committed.relative_to(self.run_dir) if committed.is_relative_to(self.run_dir) else committed
                outputs[name] = (stage.outputs[name].kind, str(where), writer.rows_written)
        except BaseException:
            for writer in scope.writers.values():
                writer.abort()
            raise
        finally:
            self.scope = None
            self.executor.end_stage()  # model replicas live for one stage: the next one gets their CPUs/GPUs
        incomplete = None
        if scope.failed or scope.unsent:
            incomplete = {"failed": scope.failed, "unsent": scope.unsent}
            metrics["failed_requests"], metrics["unsent_requests"] = scope.failed, scope.unsent
        elif scope.partial_inputs:
            incomplete = {"inputs": scope.partial_inputs}
        if self._ledger is not None:
            self.state.ledger_ok = max(self.state.ledger_ok, self._ledger.counts().get("ok", 0))
        self.state.record(stage.stage_id, stage.name, scope.inputs, outputs, incomplete=incomplete)
        self.state.save()
        return metrics

    def _resolve(self, stage: "Stage") -> dict[str, TableRef]:
        resolved: dict[str, TableRef] = {}
        for name, port in stage.inputs.items():
            if port.kind == "*":
                continue
            ref = self.state.resolve(stage.stage_id, port.kind)
            if ref is None:
                if port.optional:
                    continue
                ref = self.state.require(stage.stage_id, port.kind)  # raises, naming the missing producer
            resolved[name] = ref
        return resolved

    def _scope(self, what: str) -> StageScope:
        if self.scope is None:
            raise RuntimeError(f"ctx.{what} is only available while a stage runs")
        return self.scope

    def has_input(self, name: str) -> bool:
        return name in self._scope("has_input").inputs

    def input(self, name: str) -> ShardReader | TableReader:
        """A reader of the stage's input ``name``, resolved from the lineage (see ``Stage.inputs``)."""
        scope = self._scope("input")
        if name not in scope.inputs:
            declared = scope.stage.inputs
            if name not in declared:
                raise RuntimeError(f"stage {scope.stage.stage_id} declares no input '{name}' "
                                   f"(inputs: {', '.join(declared) or 'none'})")
            raise ConfigError(f"{self.run_dir}: stage {scope.stage.stage_id} has no '{name}' input in this run")
        ref = scope.inputs[name]
        self._check_complete(scope, name, ref)
        return open_table(self.path(ref.path), name=name, producer=ref.stage)

    def records(self, name: str, batch_size: int = 8192) -> Iterator[Problem | Sample]:
        """Input ``name`` as typed records (``Problem`` or ``Sample``, by its kind), streamed batch by batch."""
        ref = self._scope("records").inputs.get(name)
        kind = ref.kind if ref is not None else None
        record = {"problems": Problem, "samples": Sample}.get(kind or "")
        if record is None:
            raise TypeError(f"input {name!r} of kind {kind!r} has no record type")
        for rows in self.input(name).batches(batch_size):
            yield from (record.from_row(r) for r in rows)

    def _check_complete(self, scope: StageScope, name: str, ref: TableRef) -> None:
        """Refuse an input from a stage that finished short of answers, unless partial results are allowed."""
        gap = self._incomplete(ref.stage)
        if not gap:
            return
        if not self.allow_partial:
            raise IncompleteRunError(
                f"{self.run_dir}: stage {scope.stage.stage_id} would read {name} from {ref.stage}, which is "
                f"incomplete ({gap}). `mathforge retry {self.run_dir}` re-sends the failed requests and reruns what "
                "depends on them; pass --allow-partial (recipe: allow_partial: true) to go on with partial data")
        if name not in scope.partial_inputs:
            scope.partial_inputs.append(name)

    def _incomplete(self, stage_id: str) -> str:
        info = (self.state.stages.get(stage_id) or {}).get("incomplete")
        if not info:
            return ""
        if "inputs" in info:
            return f"it ran on partial inputs {', '.join(info['inputs'])}"
        return f"{info.get('failed', 0):,} requests failed, {info.get('unsent', 0):,} unsent"

    def input_ref(self, name: str) -> TableRef | None:
        """Where input ``name`` comes from (producer stage, path, commit), or None when an optional one is absent."""
        return self._scope("input_ref").inputs.get(name)

    def input_path(self, name: str) -> Path | None:
        """The path of an input that is a file or folder rather than a table (a report, an export)."""
        ref = self.input_ref(name)
        return self.path(ref.path) if ref is not None else None

    def output(self, name: str, *, fingerprint: str = "", resume: bool = False,
               rows_per_shard: int | None = None) -> ShardWriter:
        """The shard writer of the stage's output ``name``; committed as a whole when the stage returns.

        With ``resume`` (stages that map input shard i to output shard i), shards finished by an earlier attempt
        with the same ``fingerprint`` (config and input) are kept: see ``store/shards.py``.
        """
        scope = self._scope("output")
        port = self._port(scope, name)
        if name not in scope.writers:
            extra = {"rows_per_shard": rows_per_shard} if rows_per_shard else {}
            scope.writers[name] = ShardWriter(self.path(scope.stage.output_file(name)), SCHEMAS.get(port.kind),
                                              fingerprint=fingerprint, resume=resume, **extra)
        writer = scope.writers[name]
        assert isinstance(writer, ShardWriter)
        return writer

    def output_dir(self, name: str, folder: str | None = None) -> DirWriter:
        """A staging folder for output ``name``, switched in whole (as ``folder``) when the stage returns."""
        scope = self._scope("output_dir")
        self._port(scope, name)
        if name not in scope.writers:
            scope.writers[name] = DirWriter(self.path(folder or scope.stage.output_file(name)))
        writer = scope.writers[name]
        assert isinstance(writer, DirWriter)
        return writer

    def output_file(self, name: str) -> FileWriter:
        """A small output file (a report), written aside and renamed into place when the stage returns."""
        scope = self._scope("output_file")
        self._port(scope, name)
        if name not in scope.writers:
            scope.writers[name] = FileWriter(self.path(scope.stage.output_file(name)))
        writer = scope.writers[name]
        assert isinstance(writer, FileWriter)
        return writer

    def output_in_place(self, name: str, folder: str | None = None) -> Path:
        """An output folder the stage keeps up to date in place (it resumes from it); recorded when the stage ends."""
        scope = self._scope("output_in_place")
        self._port(scope, name)
        if name not in scope.writers:
            scope.writers[name] = InPlace(self.path(folder or scope.stage.output_file(name)))
        return scope.writers[name].path

    @staticmethod
    def _port(scope: StageScope, name: str) -> "Port":
        if name not in scope.stage.outputs:
            raise RuntimeError(f"stage {scope.stage.stage_id} declares no output '{name}' "
                               f"(outputs: {', '.join(scope.stage.outputs) or 'none'})")
        return scope.stage.outputs[name]

    def note_unanswered(self, failed: int, unsent: int) -> None:
        """Requests of the running stage that have no answer: the stage's output is partial."""
        if self.scope is not None:
            self.scope.failed += failed
            self.scope.unsent += unsent

    # -- whole tables, for stages and tests that work with lists -----------------------------------------------------
    def problems(self) -> list[Problem]:
        """The problems this stage reads (or, outside a stage, the run's final problems table)."""
        return [Problem.from_row(r) for r in self._read_kind("problems")]

    def samples(self) -> list[dict[str, Any]]:
        """The samples this stage reads (or, outside a stage, the run's final samples table)."""
        return self._read_kind("samples")

    def has(self, kind: str) -> bool:
        if self.scope is not None:
            return any(r.kind == kind for r in self.scope.inputs.values())
        return self.state.latest(kind) is not None

    def _read_kind(self, kind: str) -> list[dict[str, Any]]:
        if self.scope is not None:
            name = next((n for n, r in self.scope.inputs.items() if r.kind == kind), None)
            if name is None:
                raise ConfigError(f"{self.run_dir}: stage {self.scope.stage.stage_id} has no {kind} input in this run")
            return self.input(name).to_pylist()
        ref = self.state.latest(kind) or self.state.require("\0after-all", kind)
        return open_table(self.path(ref.path)).to_pylist()

    def write_problems(self, stage_id: str, problems: list[Problem]) -> Path:
        """Seed a run with a problems table as if stage ``stage_id`` had written it (CLI commands, tests)."""
        return self._write_seed(stage_id, "problems", [p.to_row() for p in problems])

    def write_samples(self, stage_id: str, rows: list[dict[str, Any]]) -> Path:
        """Seed a run with a samples table as if stage ``stage_id`` had written it (CLI commands, tests)."""
        return self._write_seed(stage_id, "samples", rows)

    def _writable(self) -> None:
        if self.shared:
            raise RuntimeError(f"{self.run_dir}: a shared context (no writer's lock) cannot write stage outputs")

    def _write_seed(self, stage_id: str, kind: str, rows: list[dict[str, Any]]) -> Path:
        self._writable()
        if self.scope is not None:
            raise RuntimeError("inside a stage, write through ctx.output(name)")
        writer = TableWriter(self.path(f"{stage_id}.parquet"), SCHEMAS[kind])
        writer.write(rows)
        path = writer.commit()
        self._record_seed(stage_id, kind, path.name, writer.rows_written)
        return path

    def add_file(self, stage_id: str, kind: str, name: str) -> None:
        """Record a file already in the run directory (a curate report, say) as an output of seed ``stage_id``."""
        if not self.path(name).exists():
            raise ConfigError(f"{self.path(name)}: no such file to add to the run")
        self._record_seed(stage_id, kind, name, None)

    def _record_seed(self, stage_id: str, kind: str, name: str, rows: int | None) -> None:
        prior = self.state.stages.get(stage_id) or {}
        outputs = {n: (o["kind"], o["path"], o.get("rows")) for n, o in (prior.get("outputs") or {}).items()
                   if prior.get("name") == "input" and o["kind"] != kind}
        self.state.record(stage_id, "input", {}, {**outputs, kind: (kind, name, rows)})
        self.state.save()

    def reject(self, stage_id: str, items: list[tuple[dict[str, Any], str]]) -> int:
        """Keep what a stage dropped, with the reason, in rejected.parquet."""
        return append_rejected(self.run_dir, stage_id, items)

    # -- models --------------------------------------------------------------------------------------------------
    def backend(self, teacher: str) -> Backend:
        """The backend of a named teacher, created once per run (the model itself loads lazily)."""
        if teacher not in self.teachers:
            raise ConfigError(f"unknown teacher '{teacher}'; teachers in this recipe: {', '.join(self.teachers) or 'none'}")
        if teacher not in self._backends:
            config = self.teachers[teacher]
            adapter = getattr(config, "adapter", None)
            if adapter and not Path(adapter).is_absolute() and self.path(adapter).exists():
                # A teacher's relative adapter (``train/adapter``) is the one a stage of this run trained.
                config = config.model_copy(update={"adapter": str(self.path(adapter))})
            # where the model runs decides its identity (a CPU replica's fp16 linear layers): the executor knows
            config = self.executor.teacher_config(config)
            self._backends[teacher] = make_backend(teacher, config)
        return self._backends[teacher]

    def forget_backend(self, teacher: str) -> None:
        """Drop a teacher's backend (after its config changed): the next ``backend`` call makes a new one."""
        backend = self._backends.pop(teacher, None)
        if backend is not None:
            backend.close()

    def close(self) -> None:
        self.executor.close()
        for b in self._backends.values():
            b.close()
        self._backends.clear()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self.lock.release()


@contextmanager
def open_run(run_dir: str | Path, **kwargs: Any) -> Iterator[RunContext]:
    """A RunContext closed (and its lock released) on exit."""
    ctx = RunContext(run_dir, **kwargs)
    try:
        yield ctx
    finally:
        ctx.close()


def open_table(path: Path, *, name: str = "", producer: str | None = None) -> ShardReader | TableReader:
    """A reader of a stage table: a shard directory (``store/shards.py``) or a single Parquet file."""
    if path.is_dir():
        return ShardReader(path, name=name, producer=producer)
    return TableReader(path, name=name, producer=producer)
