"""The critique → rewrite → re-verify loop over samples, one round at a time, every version kept.

Round 0 is the input samples. In each round the judge scores the current versions (retrying malformed replies with a
new sample index), the verifier's verdict overrides the judge where a gold answer exists, and versions that are wrong
or score under the threshold are rewritten with the critique (and a "your answer is wrong" hint) into the next round.
Each rewrite is re-verified against the gold. Every request goes through the ledger, so the loop resumes per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mathforge.records import Problem
from mathforge.refine.judge import apply_verifier, parse_judgement
from mathforge.refine.prompts import judge_messages, rewrite_messages
from mathforge.refine.send import Usage, failure, plan, send
from mathforge.verify import verify_rows

if TYPE_CHECKING:
    from mathforge.pipeline.context import RunContext
    from mathforge.refine.stage import RefineConfig, SamplingConfig

EXTRA_COLUMNS = ("lineage", "score", "scores", "feedback", "judge_error", "judge_attempts", "judge_overridden",
                 "outcome", "rewrite_error", "selected")


@dataclass
class RefineResult:
    versions: list[dict[str, Any]]  # every round of every sample
    selected: list[dict[str, Any]]  # the best version of each input sample
    rounds: list[dict[str, Any]]  # per-round counts
    usage: dict[str, dict[str, Any]]



def _problem(row: dict[str, Any]) -> Problem:
    return Problem(id=row["problem_id"], question=row["question"], answer=row.get("gold"))


def _verify(rows: list[dict[str, Any]], extractors: list[str] | None) -> list[dict[str, Any]]:
    return verify_rows(rows, extractors=extractors) if rows else []


def judge_versions(ctx: "RunContext", versions: list[dict[str, Any]], cfg: "RefineConfig", teacher: str, usage: Usage) -> None:
    """Score each version in place; a reply still malformed after the last attempt is recorded as a judge failure."""
    params = cfg.judge_sampling.params(cfg.seed if cfg.seed is not None else ctx.seed)
    pending = list(versions)
    for v in pending:
        v.update(score=None, scores=None, feedback=None, judge_error=None, judge_attempts=0, judge_overridden=False)
    for attempt in range(cfg.judge_attempts):
        if not pending:
            break
        planned = [
            plan(ctx, teacher, _problem(v), "refine-judge", judge_messages(v["question"], v["text"], cfg.criteria),
                 params, attempt, {"sample_id": v["id"]})
            for v in pending
        ]
        answered = send(ctx, planned, usage, cfg.retry_failed)
        still = []
        for v, p in zip(pending, planned):
            v["judge_attempts"] = attempt + 1
            row = answered.get(p.request.key)
            if row is None:
                v["judge_error"] = f"request {failure(ctx, p.request.key)}"
                still.append(v)
                continue
            judgement, error = parse_judgement(row.text, cfg.criteria)
            if judgement is None:
                v["judge_error"] = f"{error}; reply: {(row.text or '')[:200]!r}"
                still.append(v)
                continue
            judgement, overridden = apply_verifier(judgement, v.get("correct"))
            v.update(score=judgement.score(), scores=json.dumps(judgement.scores), feedback=judgement.critique,
                     judge_error=None, judge_overridden=overridden)
        pending = still


def _has_gold(v: dict[str, Any]) -> bool:
    return v.get("gold") is not None and str(v["gold"]).strip() != ""


def rewrite_reason(v: dict[str, Any], cfg: "RefineConfig") -> str:
    """'wrong', 'no-answer', 'low-score', or why the version stays ('passed', 'unjudged', 'unverified')."""
    if v.get("correct") is False:
        return "wrong"
    if v.get("correct") is None and _has_gold(v):
        return "no-answer"  # the verifier could not confirm it: no final answer, or an undecidable one
    if not cfg.critique:
        return "passed" if v.get("correct") is True else "unverified"
    if v.get("score") is None:
        return "passed" if v.get("correct") is True else "unjudged"
    return "low-score" if v["score"] < cfg.threshold else "passed"


def rewrite_versions(
    ctx: "RunContext", parents: list[dict[str, Any]], cfg: "RefineConfig", teacher: str, usage: Usage
) -> list[dict[str, Any]]:
    """One rewrite per parent, one round later; parents whose request failed get outcome 'rewrite-failed'."""
    params = cfg.rewrite_sampling.params(cfg.seed if cfg.seed is not None else ctx.seed)
    planned = []
    for v in parents:
        messages = rewrite_messages(
            v["question"], v["text"], v["prompt_key"], critique=v.get("feedback"),
            wrong=v.get("correct") is False, no_answer=v.get("correct") is None and _has_gold(v),
            gold=v.get("gold") if cfg.reveal_gold and v.get("gold") is not None else None,
        )
        planned.append(plan(ctx, teacher, _problem(v), v["prompt_key"], messages, params, 0, {"sample_id": v["id"]}))
    answered = send(ctx, planned, usage, cfg.retry_failed)
    children = []
    for v, p in zip(parents, planned):
        row = answered.get(p.request.key)
        if row is None:
            v["outcome"] = "rewrite-failed"
            v["rewrite_error"] = f"rewrite {failure(ctx, p.request.key)}"
            continue
        v["outcome"] = "rewritten"
        children.append({
            **{k: v.get(k) for k in ("problem_id", "question", "gold", "sample_index", "prompt_key", "lineage")},
            "id": f"{v['lineage']}~r{v['round'] + 1}",
            "teacher": teacher,
            "model": p.model,
            "request_key": p.request.key,
            "text": row.text or "",
            "finish_reason": row.finish_reason,
            "tokens_in": row.tokens_in or 0,
            "tokens_out": row.tokens_out or 0,
            "round": v["round"] + 1,
            "parent": v["id"],
        })
    return _verify(children, cfg.extractors)


def round_stats(r: int, versions: list[dict[str, Any]], parents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts for one round: verdicts, judging, and (from round 1) what the rewrites fixed, broke or left."""
    scores = [v["score"] for v in versions if v.get("score") is not None]
    s: dict[str, Any] = {
        "round": r,
        "versions": len(versions),
        "correct": sum(v.get("correct") is True for v in versions),
        "wrong": sum(v.get("correct") is False for v in versions),
        "no_answer": sum(v.get("correct") is None and _has_gold(v) for v in versions),
        "judged": len(scores),
        "judge_failures": sum(1 for v in versions if v.get("judge_error") and v.get("score") is None),
        "judge_overridden": sum(bool(v.get("judge_overridden")) for v in versions),
        "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
        "rewritten": sum(v.get("outcome") == "rewritten" for v in versions),
    }
    if r > 0:
        # over samples with a gold answer: "correct" means verified correct, anything else is not (yet) repaired
        gold = [v for v in versions if _has_gold(v)]
        pairs = [(parents[v["parent"]].get("correct") is True, v.get("correct") is True) for v in gold]
        s["fixed"] = sum(not p and c for p, c in pairs)
        s["broke"] = sum(p and not c for p, c in pairs)
        s["left_wrong"] = sum(not p and not c for p, c in pairs)
        n = sum(not p for p, _ in pairs)
        s["repaired_share"] = round(s["fixed"] / n, 4) if n else None
    return s


def _rank(v: dict[str, Any]) -> tuple:
    correct = {True: 2, None: 1, False: 0}[v.get("correct")]
    return (correct, v["score"] if v.get("score") is not None else -1.0, v["round"])


def refine_samples(ctx: "RunContext", rows: list[dict[str, Any]], cfg: "RefineConfig", refiner: str, judge: str) -> RefineResult:
    """Run the loop over ``rows`` (samples, verified or not) and return every version with the best of each."""
    usage = {"judge": Usage(), "rewrite": Usage()}
    fresh = [{k: v for k, v in r.items() if k not in EXTRA_COLUMNS} for r in rows]  # drop an earlier refine's notes
    current = [{**r, "lineage": r["id"], "round": r.get("round") or 0} for r in fresh]
    unverified = [v for v in current if v.get("method") is None and v.get("gold") is not None]
    if unverified:
        done = {v["id"]: v for v in _verify(unverified, cfg.extractors)}
        current = [done.get(v["id"], v) for v in current]
    versions = list(current)
    by_id = {v["id"]: v for v in versions}
    if cfg.only_wrong:
        for v in current:
            if rewrite_reason(v, cfg) not in ("wrong", "no-answer"):
                v["outcome"] = "kept"
        current = [v for v in current if "outcome" not in v]
    rounds = []
    for r in range(cfg.max_rounds + 1):
        if cfg.critique and current:
            judge_versions(ctx, current, cfg, judge, usage["judge"])
        todo = []
        for v in current:
            reason = rewrite_reason(v, cfg)
            if reason in ("wrong", "no-answer", "low-score"):
                v["outcome"] = "max-rounds" if r == cfg.max_rounds else reason
                if r < cfg.max_rounds:
                    todo.append(v)
            else:
                v["outcome"] = reason
        children = rewrite_versions(ctx, todo, cfg, refiner, usage["rewrite"]) if todo else []
        rounds.append(round_stats(r, current, by_id))
        versions.extend(children)
        by_id.update((c["id"], c) for c in children)
        current = children
        if not current:
            break
    best: dict[str, dict[str, Any]] = {}
    for v in versions:
        v.setdefault("outcome", "kept")
        if v["lineage"] not in best or _rank(v) >= _rank(best[v["lineage"]]):
            best[v["lineage"]] = v
    for v in versions:
        v["selected"] = best[v["lineage"]] is v
    selected = [best[r["id"]] for r in rows]
    return RefineResult(versions, selected, rounds, {k: u.as_dict() for k, u in usage.items()})
