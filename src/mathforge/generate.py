"""The generate stage: k samples per problem from each teacher, every request through the ledger.

Requests are keyed by content and registered before anything is sent; only requests without a stored response are
sent, and each response is committed as it arrives. So a rerun pays nothing twice, raising k sends only the new
samples, and a run killed at any moment resumes with at most the in-flight requests redone.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

from pydantic import Field

from mathforge.engine.accounting import TeacherStats
from mathforge.errors import ConfigError
from mathforge.memory import release_free_memory
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.progress import console, progress_bar
from mathforge.pipeline.stages import Port, Stage
from mathforge.prompts import build_messages, get_prompt
from mathforge.records import Problem, Sample
from mathforge.request import Completion, GenRequest, Planned, SamplingConfig, plan_request
from mathforge.store.ledger import FAILED, IN_BATCH, OK, PENDING, Ledger

__all__ = ["GenerateConfig", "GenerateStage", "Planned", "collect_samples", "plan_requests", "run_generation"]


class GenerateConfig(SamplingConfig):
    """Settings of the generate stage (recipe key ``generate``; also the ``mathforge generate`` flags)."""

    teachers: list[str] | None = Field(None, description="teacher names from the recipe (default: all of them)")
    k: int = Field(4, ge=1, description="samples per problem per teacher")
    prompt: str | None = Field(None, description="prompt template (default: the dataset's own, else 'cot')")
    system_prompt: str | None = Field(None, description="replaces the template's system prompt")
    seed: int | None = Field(None, description="sampling seed (default: the recipe's seed)")
    retry_failed: bool = Field(False, description="re-send requests recorded as failed (what `mathforge retry` does)")
    window: int = Field(
        20_000, ge=1, description="requests planned, looked up in the ledger and sent together (bounds memory)"
    )


def plan_requests(ctx: RunContext, problems: Sequence[Problem], cfg: GenerateConfig, *,
                  allow_twins: bool = False) -> list[Planned]:
    """Every (problem, teacher, sample index) request with its content key.

    ``allow_twins``: an eval may score two names of one model (two arms trained on the same rows): they share
    the ledger's answers and get equal scores, which is the truth, not duplicated training data."""
    teachers = cfg.teachers or list(ctx.teachers)
    if not teachers:
        raise ConfigError("generate: the recipe defines no teachers")
    seed = cfg.seed if cfg.seed is not None else ctx.seed
    params = cfg.params(seed)
    identities = {t: ctx.backend(t).identity() for t in teachers}
    if not allow_twins:
        _refuse_twins(identities)
    planned = []
    for t in teachers:
        for p in problems:
            prompt_key = cfg.prompt or p.meta.get("prompt") or "cot"
            messages = build_messages(get_prompt(prompt_key), p, cfg.system_prompt)
            planned += [plan_request(identities[t], t, p, prompt_key, messages, params, i) for i in range(cfg.k)]
    return planned


def _refuse_twins(identities: dict[str, tuple[str, str]]) -> None:
    """Two teachers of one model at one endpoint would send identical requests and get one set of answers.

    The ledger key deliberately leaves the teacher's name out (renaming a teacher must not re-pay its answers), so
    such twins would share every response: refuse them rather than export duplicate samples under two names.
    """
    seen: dict[tuple[str, str], str] = {}
    for name, ident in identities.items():
        if ident in seen:
            raise ConfigError(
                f"generate: teachers '{seen[ident]}' and '{name}' are the same model '{ident[0]}' at {ident[1]}: "
                "they would send identical requests and get identical samples. Use one of them with a larger k "
                "for more samples"
            )
        seen[ident] = name


class LedgerSink:
    """Commits each finished request to the ledger and keeps the teacher's progress line current."""

    def __init__(self, ledger: Ledger, progress: Any = None, task: Any = None, stats: TeacherStats | None = None):
        self.ledger, self.progress, self.task = ledger, progress, task
        self.stats = stats or TeacherStats()
        self.tokens_out = 0
        self.failed = 0
        self._lock = threading.Lock()

    def ok(self, request: GenRequest, completion: Completion) -> None:
        self.ok_many([(request, completion)])

    def ok_many(self, items: Sequence[tuple[GenRequest, Completion]]) -> None:
        self.ledger.record_ok_many(
            [(r.key, c.text, c.finish_reason, c.tokens_in, c.tokens_out, c.response, c.latency, 1) for r, c in items]
        )
        with self._lock:
            self.tokens_out += sum(c.tokens_out for _, c in items)
            if self.progress is not None:
                self.progress.update(self.task, advance=len(items), tokens=self.tokens_out, extra=self.stats.line())

    def fail(self, request: GenRequest, error: str, *, final: bool, abandoned: bool = False) -> None:
        self.ledger.record_failure(request.key, error, final=final, abandoned=int(abandoned))
        if final:
            with self._lock:
                self.failed += 1
                if self.progress is not None:
                    self.progress.update(self.task, advance=1, extra=self.stats.line())


def run_generation(ctx: RunContext, planned: list[Planned], retry_failed: bool = False) -> dict[str, Any]:
    """Send what the ledger has no answer for, every teacher at once under its own limits; returns counts and rates."""
    ledger: Ledger = ctx.ledger
    ledger.register((p.request.key, p.teacher, p.model, _request_record(p)) for p in planned)
    if retry_failed:
        ledger.reset_failed(p.request.key for p in planned)
    status = ledger.statuses([p.request.key for p in planned])
    todo: dict[str, list[GenRequest]] = {}
    seen: set[str] = set()
    # A batch teacher also gets its requests already in provider batches: it collects them (never re-submits).
    batched = {t for t in {p.teacher for p in planned} if getattr(ctx.backend(t), "resumes_batches", False)}
    in_batches = 0
    for p in planned:
        st = status.get(p.request.key)
        if p.request.key in seen:
            continue
        if st == PENDING or (st in IN_BATCH and p.teacher in batched):
            seen.add(p.request.key)
            todo.setdefault(p.teacher, []).append(p.request)
        elif st in IN_BATCH:
            in_batches += 1
    if in_batches:
        console.log(f"[yellow]{in_batches} requests are in provider batches of a teacher now online; "
                    "`mathforge status RUN_DIR` collects them (they are never sent twice)")
    cached = sum(1 for s in status.values() if s == OK)
    failed_before = sum(1 for s in status.values() if s == FAILED)
    metrics: dict[str, Any] = {"requests": len(planned), "cached": cached, "sent": sum(map(len, todo.values()))}
    if in_batches:
        metrics["in_batches"] = in_batches
    if failed_before:
        console.log(f"[yellow]{failed_before} requests failed earlier; `mathforge retry RUN_DIR` re-sends them")
    if not todo:
        ctx.note_unanswered(failed_before, in_batches)
        return metrics | {"new_tokens_out": 0, "gen_seconds": 0.0}
    t_prep = time.perf_counter()
    ctx.executor.prepare(ctx, list(todo))  # loading local weights takes a while: say so, so a log is not silent
    if time.perf_counter() - t_prep > 1:
        console.log(f"teacher{'s' if len(todo) > 1 else ''} {', '.join(todo)} ready in "
                    f"{time.perf_counter() - t_prep:.1f} s")
    usage = ledger.usage()
    t0 = time.perf_counter()
    sinks: dict[str, LedgerSink] = {}
    errors: list[BaseException] = []
    with progress_bar() as prog:

        def work(teacher: str, reqs: list[GenRequest]) -> None:
            task = prog.add_task(f"generate {teacher}", total=len(reqs), tokens=0, extra="")
            prior = usage.get(teacher, {})
            stats = TeacherStats(total=len(reqs), prior_tokens_in=prior.get("tokens_in", 0),
                                 prior_tokens_out=prior.get("tokens_out", 0))
            sinks[teacher] = sink = LedgerSink(ledger, prog, task, stats)
            try:
                ctx.executor.generate(ctx, teacher, reqs, sink)
            except BaseException as exc:  # the other teachers finish; what was answered stays in the ledger
                errors.append(exc)

        if len(todo) == 1:
            work(*next(iter(todo.items())))
        else:
            with ThreadPoolExecutor(len(todo)) as pool:
                for f in [pool.submit(work, t, r) for t, r in todo.items()]:
                    f.result()
    seconds = time.perf_counter() - t0
    for teacher, sink in sinks.items():
        _report(teacher, sink, len(todo[teacher]))
    if errors:
        raise errors[0]
    after = ledger.statuses(list(seen | {k for k, s in status.items() if s != OK}))
    ctx.note_unanswered(sum(1 for s in after.values() if s == FAILED),
                        sum(1 for s in after.values() if s == PENDING or s in IN_BATCH))
    new_tokens = sum(s.tokens_out for s in sinks.values())
    return metrics | {
        "new_tokens_out": new_tokens,
        "gen_seconds": round(seconds, 3),
        "tokens_per_s": round(new_tokens / seconds, 1) if seconds else None,
        "failed": sum(s.failed for s in sinks.values()),
        # every HTTP attempt that may be billed (remote teachers), not only the answers kept
        "api_calls": sum(s.stats.api_calls for s in sinks.values()),
        "abandoned_calls": sum(s.stats.abandoned for s in sinks.values()),
        "teachers": {t: s.stats.as_dict() for t, s in sinks.items()},
    }


def _report(teacher: str, sink: LedgerSink, sent: int) -> None:
    """Say why a teacher stopped short: the budget cap, or requests recorded as failed."""
    st = sink.stats
    if st.stopped:
        unsent = sent - st.done - st.failed
        console.log(f"[yellow]teacher {teacher}: {st.stopped} (spent ${st.spend + st.prior_spend:,.2f}); "
                    f"{unsent} requests left unsent — raise the budget and rerun to send them")
    if sink.failed:
        console.log(f"[yellow]teacher {teacher}: {sink.failed} requests failed after every attempt "
                    "(kept in the ledger with their last error); `mathforge retry RUN_DIR` re-sends them")


def _request_record(p: Planned) -> dict[str, Any]:
    return {
        "messages": p.request.messages,
        "params": p.request.params.as_dict(),
        "sample_index": p.request.sample_index,
        "problem_id": p.problem.id,
        "prompt_key": p.prompt_key,
    }


def collect_samples(ledger: Ledger, planned: list[Planned]) -> tuple[list[dict[str, Any]], int]:
    """Samples for every planned request that has a response, in plan order; and how many have none."""
    rows = ledger.answers([p.request.key for p in planned])
    out, missing = [], 0
    for p in planned:
        row = rows.get(p.request.key)
        if row is None:
            missing += 1
            continue
        out.append(
            Sample(
                id=f"{p.problem.id}#{p.teacher}#{p.request.sample_index}",
                problem_id=p.problem.id,
                question=p.problem.question,
                gold=p.problem.answer,
                teacher=p.teacher,
                model=p.model,
                sample_index=p.request.sample_index,
                prompt_key=p.prompt_key,
                request_key=p.request.key,
                text=row.text or "",
                finish_reason=row.finish_reason,
                tokens_in=row.tokens_in or 0,
                tokens_out=row.tokens_out or 0,
            ).to_row()
        )
    return out, missing


class GenerateStage(Stage):
    name = "generate"
    Config = GenerateConfig
    inputs = {"problems": Port("problems")}
    outputs = {"samples": Port("samples")}
    stage_id = "generate"

    def run(self, ctx: RunContext, cfg: GenerateConfig) -> dict[str, Any]:
        """Problems shard by shard, and within a shard in windows of ``cfg.window`` requests: plan, look up, send,
        collect. Memory holds one window; a finished shard is kept across a kill (its marker records the requests
        it left unanswered, which count again), an unfinished one is re-planned and resumes from the ledger."""
        from mathforge.store.shards import fingerprint, shards_of

        source = shards_of(ctx.input("problems"))
        teachers = cfg.teachers or list(ctx.teachers)
        if not teachers:
            raise ConfigError("generate: the recipe defines no teachers")
        identities = {t: ctx.backend(t).identity() for t in teachers}
        stamp = fingerprint(cfg.model_dump(mode="json"), ctx.seed, identities, str(source.path), source.identity())
        writer = ctx.output("samples", fingerprint=stamp, resume=True)
        per_window = max(1, cfg.window // (cfg.k * max(1, len(teachers))))
        metrics: dict[str, Any] = {}
        totals = {"samples": 0, "tokens_in": 0, "tokens_out": 0, "missing": 0}
        reused = 0
        for i in range(len(source)):
            if writer.done(i):
                reused += 1
                info = writer.marker(i)
                ctx.note_unanswered(info.get("failed", 0), info.get("unsent", 0))
                totals["missing"] += info.get("missing", 0)
                for batch in writer.staged_batches(i, ["tokens_in", "tokens_out"]):
                    _count(totals, batch.column("tokens_in").to_pylist(), batch.column("tokens_out").to_pylist())
                continue
            scope = ctx.scope
            before = (scope.failed, scope.unsent) if scope is not None else (0, 0)
            shard = {"missing": 0}

            def unanswered(shard: dict[str, int] = shard, before: tuple[int, int] = before) -> dict[str, int]:
                now = (ctx.scope.failed, ctx.scope.unsent) if ctx.scope is not None else (0, 0)
                return {"failed": now[0] - before[0], "unsent": now[1] - before[1], "missing": shard["missing"]}

            writer.write_shard(i, self._windows(ctx, cfg, source, i, per_window, metrics, totals, shard),
                               info=unanswered)
        lost = getattr(ctx.executor, "lost_replicas", None)  # replicas lost with their Ray worker, re-queued
        return metrics | totals | {"shards_reused": reused} | ({} if lost is None else {"lost_replicas": lost})

    def _windows(self, ctx: RunContext, cfg: GenerateConfig, source: Any, shard: int, per_window: int,
                 metrics: dict[str, Any], totals: dict[str, int], info: dict[str, int]) -> Iterator[dict[str, Any]]:
        for batch in source.shard_batches(shard, per_window):
            samples = _window(ctx, cfg, batch.to_pylist(), metrics, totals, info)
            del batch
            yield from samples
            # Dropped before the next window is planned: otherwise two windows' worth of rows would live at once.
            del samples
            release_free_memory()


def _window(ctx: RunContext, cfg: GenerateConfig, rows: list[dict[str, Any]], metrics: dict[str, Any],
            totals: dict[str, int], info: dict[str, int]) -> list[dict[str, Any]]:
    """One window: plan, look up, send, collect; only its samples outlive it (the plan dies on return)."""
    planned = plan_requests(ctx, [Problem.from_row(r) for r in rows], cfg)
    del rows
    _add_metrics(metrics, run_generation(ctx, planned, cfg.retry_failed))
    samples, missing = collect_samples(ctx.ledger, planned)
    totals["missing"] += missing
    info["missing"] += missing
    _count(totals, [s["tokens_in"] for s in samples], [s["tokens_out"] for s in samples])
    return samples


def _count(totals: dict[str, int], tokens_in: list, tokens_out: list) -> None:
    totals["samples"] += len(tokens_in)
    totals["tokens_in"] += sum(t or 0 for t in tokens_in)
    totals["tokens_out"] += sum(t or 0 for t in tokens_out)


_RATES = {"calls_per_answer", "ex_per_min", "tokens_per_s"}  # recomputed from the summed counts, never summed


def _add_metrics(total: dict[str, Any], part: dict[str, Any], seconds: float | None = None) -> None:
    """Sum one window's counts into the stage's (nested per teacher); the first window is taken as it is."""
    if not total:
        total.update(copy.deepcopy(part))
        return
    seconds = part.get("gen_seconds", 0.0) + total.get("gen_seconds", 0.0) if seconds is None else seconds
    for k, v in part.items():
        if isinstance(v, dict):
            _add_metrics(total.setdefault(k, {}), v, seconds)
        elif k in _RATES:
            continue
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v
        elif v is not None or k not in total:
            total[k] = v
    if "done" in total and "api_calls" in total:  # a teacher's stats
        done = total["done"]
        total["calls_per_answer"] = round(total["api_calls"] / done, 4) if done else None
        if seconds:
            total["ex_per_min"] = round(done / seconds * 60, 1)
            total["tokens_per_s"] = round(total.get("tokens_out", 0) / seconds, 1)
    elif seconds and "new_tokens_out" in total:
        total["tokens_per_s"] = round(total["new_tokens_out"] / seconds, 1)


def retry_failed_requests(run_dir: str | Path, mode: str | None = None) -> dict[str, dict[str, Any]]:
    """Re-send only the requests a run recorded as failed, then rerun what depends on them; metrics per stage.

    ``mode`` ("online" or "batch") overrides the mode of every teacher that has one, for this retry only."""
    from mathforge.pipeline.runner import retry_run

    return retry_run(run_dir, mode=mode)["stages"]
