"""``mathforge status RUN``: what a run directory holds, and the provider batches it left in flight, collected."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.engine.cost import TeacherCost, teacher_costs
from mathforge.errors import ConfigError
from mathforge.store.batches import BatchRow, BatchStore
from mathforge.store.ledger import Ledger


@dataclass
class RunStatus:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # teacher -> status -> requests
    batches: list[BatchRow] = field(default_factory=list)  # every batch, newest last
    costs: dict[str, TeacherCost] = field(default_factory=dict)
    collected: int = 0  # requests whose batch result was committed by this call
    open_batches: int = 0


def check_run(run_dir: str | Path, *, collect: bool = True, wait: bool = False) -> RunStatus:
    """Check every open batch once (or until all ended with ``wait``), commit finished ones, and report."""
    from mathforge.pipeline.recipe import load_recipe

    run_dir = Path(run_dir)
    db = run_dir / "ledger.sqlite"
    if not db.exists():
        raise ConfigError(f"{run_dir}: no ledger.sqlite here; `mathforge status` takes a run directory")
    teachers: dict[str, Any] = {}
    if (run_dir / "recipe.yaml").exists():
        teachers = load_recipe(str(run_dir / "recipe.yaml")).teachers
    out = RunStatus()
    with _writer_lock(run_dir, collect), Ledger(db) as ledger:
        store = BatchStore(ledger)
        if collect:
            out.collected = _collect(ledger, store, teachers, wait)
        for teacher, status, n in ledger.query("SELECT teacher, status, COUNT(*) FROM requests GROUP BY 1, 2"):
            out.counts.setdefault(teacher, {})[status] = n
        out.batches = store.all_batches()
        out.open_batches = len(store.open_batches())
        with ledger.transaction() as conn:
            out.costs = teacher_costs(conn, teachers)
    return out


def _writer_lock(run_dir: Path, collect: bool) -> Any:
    """Collecting writes the ledger: take the run's writer lock (a running `mathforge run` is collecting already)."""
    import contextlib

    from mathforge.pipeline.lock import RunLock

    return RunLock(run_dir) if collect else contextlib.nullcontext()


def _collect(ledger: Ledger, store: BatchStore, teachers: dict[str, Any], wait: bool) -> int:
    from mathforge.backends import make_backend

    before = ledger.counts()
    for teacher in sorted({b.teacher for b in store.open_batches()}):
        if teacher not in teachers:
            raise ConfigError(f"batches of teacher '{teacher}' are in flight but recipe.yaml no longer names it; "
                              "put the teacher back to collect them")
        backend = make_backend(teacher, teachers[teacher])
        if not hasattr(backend, "runner"):
            raise ConfigError(f"teacher '{teacher}' has batches in flight but is configured online now; "
                              "set `mode: batch` again to collect them")
        runner = backend.runner(ledger)
        if wait:  # --wait means until they end, whatever max_wait the recipe gives `mathforge run`
            runner.options = runner.options.model_copy(update={"max_wait": None})
        try:
            runner.wait() if wait else runner.poll_once()
        finally:
            runner.provider.close()
    after = ledger.counts()
    return sum(after.get(s, 0) - before.get(s, 0) for s in ("ok", "failed"))
