"""The runner: stages of a recipe in order over one run directory, each on the inputs its lineage names.

It holds the run directory's lock for the whole run, stops before later stages when a stage is left short of
answers (unless the recipe allows partial results), and reruns exactly the stages downstream of a retried one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mathforge.config import dump_yaml
from mathforge.errors import ConfigError, IncompleteRunError
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.progress import console
from mathforge.pipeline.stages import Stage, downstream, stage_class

if TYPE_CHECKING:
    from mathforge.pipeline.recipe import Recipe


def recipe_stages(recipe: "Recipe") -> list[tuple[str, type[Stage]]]:
    return [(sid, stage_class(name)) for name, sid, _ in recipe.stages]


def select_stages(recipe: "Recipe", only: list[str] | None = None, start: str | None = None) -> list[str]:
    """Stage ids to run: all, ``only`` these (by name or id), or ``start`` and every stage downstream of it."""
    ids = [sid for _, sid, _ in recipe.stages]
    if only:
        unknown = [o for o in only if o not in ids and o not in {n for n, _, _ in recipe.stages}]
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not a stage of this recipe ({', '.join(ids)})")
        return [sid for name, sid, _ in recipe.stages if name in only or sid in only]
    if start:
        if start not in ids:
            raise ConfigError(f"--from {start}: not a stage id of this recipe ({', '.join(ids)})")
        return [start, *downstream(recipe_stages(recipe), {start})]
    return ids


def open_recipe_run(recipe: "Recipe", run_dir: str | Path | None = None, *, allow_partial: bool = False,
                    new_ledger: bool = False, write_recipe: bool = True, executor: str | None = None,
                    address: str | None = None) -> RunContext:
    """The run directory of a recipe, locked, with the recipe written and its stage order recorded.

    ``executor`` ("local" or "ray") overrides the recipe's; ``address`` is the Ray cluster to join."""
    from mathforge.executor import make_executor

    run_dir = Path(run_dir or recipe.run_dir or Path("runs") / recipe.name)
    ctx = RunContext(run_dir, teachers=recipe.teachers, seed=recipe.seed,
                     allow_partial=allow_partial or recipe.allow_partial, new_ledger=new_ledger)
    try:
        ctx.executor = make_executor(executor or recipe.executor, address)
        if write_recipe:
            tmp = run_dir / ".recipe.yaml.mf-tmp"
            tmp.write_text(dump_yaml(recipe.effective()), encoding="utf-8")
            tmp.replace(run_dir / "recipe.yaml")
        ctx.state.set_order([sid for _, sid, _ in recipe.stages],
                            {sid: sorted(cls.output_kinds()) for sid, cls in recipe_stages(recipe)})
        ctx.state.save()
    except BaseException:
        ctx.close()
        raise
    return ctx


def run_recipe(recipe: "Recipe", run_dir: str | Path | None = None, *, only: list[str] | None = None,
               start: str | None = None, allow_partial: bool = False, new_ledger: bool = False,
               executor: str | None = None, address: str | None = None) -> dict[str, Any]:
    """Run the recipe's stages (all, ``only`` some, or from ``start`` on); returns the summary (summary.json).

    ``executor``/``address`` override where the stages run (see ``mathforge.executor``). Raises
    ``IncompleteRunError`` (exit code 3) after writing the summary when requests failed for good."""
    ctx = open_recipe_run(recipe, run_dir, allow_partial=allow_partial, new_ledger=new_ledger, executor=executor,
                          address=address)
    try:
        return execute(ctx, recipe, select_stages(recipe, only, start))
    finally:
        ctx.close()


def execute(ctx: RunContext, recipe: "Recipe", stage_ids: list[str]) -> dict[str, Any]:
    """Run the given stages in recipe order; stop before later stages when one is left incomplete."""
    from mathforge.summary import build_summary, write_summary

    t0, started = time.perf_counter(), time.time()
    short: list[tuple[str, int, int]] = []  # (stage id, failed, unsent)
    skipped: list[str] = []
    for name, stage_id, cfg in recipe.stages:
        if stage_id not in stage_ids:
            continue
        if short and not ctx.allow_partial:
            skipped.append(stage_id)
            continue
        stage = stage_class(name)(stage_id)
        ts = time.perf_counter()
        console.log(f"[bold cyan]stage {stage_id}[/] …")
        metrics = stage.run(ctx, cfg)
        metrics["seconds"] = round(time.perf_counter() - ts, 3)
        ctx.metrics[stage_id] = metrics
        if metrics.get("failed_requests") or metrics.get("unsent_requests"):
            short.append((stage_id, metrics.get("failed_requests", 0), metrics.get("unsent_requests", 0)))
    summary = build_summary(ctx, wall=time.perf_counter() - t0, started=started)
    write_summary(ctx.run_dir, summary)
    if short:
        raise incomplete_error(ctx, short, skipped, summary)
    return summary


def incomplete_error(ctx: RunContext, short: list[tuple[str, int, int]], skipped: list[str],
                     summary: dict[str, Any]) -> IncompleteRunError:
    """What failed, what was not run because of it, and the command that finishes the job."""
    failed, unsent = sum(f for _, f, _ in short), sum(u for _, _, u in short)
    parts = [f"{sid}: {f:,} failed" + (f", {u:,} unsent" if u else "") for sid, f, u in short]
    lines = [f"{ctx.run_dir}: the run is incomplete — requests without an answer ({'; '.join(parts)})."]
    if failed:
        lines.append(f"`mathforge retry {ctx.run_dir}` re-sends only the {failed:,} failed requests (their last "
                     "errors are in the ledger) and reruns the stages that depend on them.")
    if unsent:
        lines.append(f"{unsent:,} requests were never sent (a budget cap or a stopped teacher): raise the limit and "
                     "rerun the recipe.")
    if skipped:
        lines.append(f"Not run on the partial data: {', '.join(skipped)} (allow_partial: true in the recipe, or "
                     "--allow-partial, runs them anyway).")
    return IncompleteRunError(" ".join(lines), failed=failed, unsent=unsent, summary=summary)


def check_complete(ctx: RunContext, stage_id: str, metrics: dict[str, Any]) -> None:
    """For a stage run on its own (a CLI command): requests left without an answer are exit code 3, as in a run."""
    failed, unsent = metrics.get("failed_requests", 0), metrics.get("unsent_requests", 0)
    if (failed or unsent) and not ctx.allow_partial:
        raise incomplete_error(ctx, [(stage_id, failed, unsent)], [], {})


def retry_run(run_dir: str | Path, *, allow_partial: bool = False, mode: str | None = None,
              executor: str | None = None, address: str | None = None) -> dict[str, Any]:
    """Re-send the failed requests of a run, then rerun exactly the stages downstream of the retried ones.

    The retried stages are those recorded as short of answers (else the recipe's generate stages). Their failed
    requests go back to pending, so the stages send only those; every other answer comes from the ledger. ``mode``
    ("online" or "batch") overrides the mode of every teacher that has one, for this retry only."""
    from mathforge.pipeline.recipe import load_recipe

    path = Path(run_dir) / "recipe.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no recipe.yaml here; `mathforge retry` takes a run directory")
    recipe = load_recipe(str(path))
    if mode is not None:
        for name, cfg in recipe.teachers.items():
            if "mode" in type(cfg).model_fields:
                allowed = type(cfg).model_fields["mode"].annotation
                if mode not in getattr(allowed, "__args__", (mode,)):
                    raise ConfigError(f"teacher {name}: backend {cfg.backend} has no mode '{mode}'")
                recipe.teachers[name] = cfg.model_copy(update={"mode": mode})
    ctx = open_recipe_run(recipe, run_dir, allow_partial=allow_partial, write_recipe=False,  # --mode: this retry only
                          executor=executor, address=address)
    try:
        ids = [sid for _, sid, _ in recipe.stages]
        targets = [sid for sid in ids if (ctx.state.stages.get(sid) or {}).get("incomplete", {}).get("failed")]
        targets = targets or [sid for name, sid, _ in recipe.stages if name == "generate"]
        reset = ctx.ledger.reset_failed()
        console.log(f"retry: {reset:,} failed requests back to pending; rerunning {', '.join(targets) or 'nothing'}")
        order = targets + downstream(recipe_stages(recipe), set(targets))
        summary = execute(ctx, recipe, order)
        return summary | {"retried": targets, "reset": reset}
    finally:
        ctx.close()
