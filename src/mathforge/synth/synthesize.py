"""New problems from seed problems or math text: write → check → dedup/decontaminate → solve k times → vote.

Every request (problem writing and solving) goes through the ledger, so synthesis resumes per request. Every
candidate either becomes a Problem (answer = the pseudo-gold, meta = level, method, seed, agreement) or a reject
with the reason, so nothing written by the teacher vanishes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mathforge.curate.decontam import BenchmarkIndex
from mathforge.prompts import build_messages, get_prompt
from mathforge.records import Problem
from mathforge.refine.send import Usage, failure, plan, send
from mathforge.synth.checks import malformed, parse_problem
from mathforge.synth.filters import duplicate_reasons, leak_reasons
from mathforge.synth.passages import Passage
from mathforge.synth.prompts import FROM_TEXT, LEVELS, passage_messages, seed_messages
from mathforge.synth.pseudo import pseudo_gold

if TYPE_CHECKING:
    from mathforge.pipeline.context import RunContext
    from mathforge.request import SamplingConfig
    from mathforge.synth.stage import SynthesizeConfig


@dataclass
class Candidate:
    """One problem-writing request and what became of it."""

    id: str
    source_id: str
    source_text: str
    method: str
    level: str
    index: int
    question: str | None = None
    reply: str | None = None
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "reply": self.reply, "level": self.level,
                "method": self.method, "seed_id": self.source_id, **self.meta}


@dataclass
class SynthResult:
    problems: list[Problem]
    rejects: list[tuple[dict[str, Any], str]]
    metrics: dict[str, Any]



def plan_candidates(seeds: list[Problem], passages: list[Passage], cfg: "SynthesizeConfig") -> list[Candidate]:
    """Every (source, method, level, index) to write a problem for, with a stable id."""
    out = []
    for s in seeds:
        for method in cfg.methods:
            for level in cfg.levels:
                for i in range(cfg.per_seed):
                    out.append(Candidate(f"synth:{s.id}:{method}:{level}:{i}", s.id, s.question, method, level, i))
    for p in passages:
        for level in cfg.levels:
            for i in range(cfg.per_passage):
                out.append(Candidate(f"synth:{p.id}:{FROM_TEXT}:{level}:{i}", p.id, p.text, FROM_TEXT, level, i))
    return out


def write_problems(ctx: "RunContext", cands: list[Candidate], cfg: "SynthesizeConfig", teacher: str, seed: int,
                   usage: Usage) -> None:
    """Ask the generator for each candidate's problem; fill in ``question`` or a reject ``reason``."""
    params = cfg.write_sampling.params(seed)
    planned = []
    for c in cands:
        messages = (passage_messages(c.source_text, c.level) if c.method == FROM_TEXT
                    else seed_messages(c.source_text, c.method, c.level))
        planned.append(plan(ctx, teacher, Problem(c.source_id, c.source_text), f"synth-{c.method}", messages, params,
                            c.index, {"candidate": c.id}))
    answered = send(ctx, planned, usage, cfg.retry_failed)
    for c, p in zip(cands, planned):
        row = answered.get(p.request.key)
        if row is None:
            c.reason = f"generation-failed: {failure(ctx, p.request.key)}"
            continue
        c.reply = row.text or ""
        c.question = parse_problem(c.reply)
        c.reason = malformed(c.question, min_chars=cfg.min_chars, max_chars=cfg.max_chars)


def screen(cands: list[Candidate], seeds: list[Problem], cfg: "SynthesizeConfig", index: BenchmarkIndex | None) -> None:
    """Mark copies of seeds or of earlier new problems, and benchmark leaks, as rejects."""
    live = [c for c in cands if c.reason is None]
    texts = [c.question or "" for c in live]
    dups = duplicate_reasons(texts, [c.id for c in live], [(s.id, s.question) for s in seeds], cfg.dedup_threshold)
    for c, reason in zip(live, dups):
        c.reason = reason
    live = [c for c in live if c.reason is None]
    for c, reason in zip(live, leak_reasons([c.question or "" for c in live], index)):
        c.reason = reason


def solve_and_vote(ctx: "RunContext", cands: list[Candidate], cfg: "SynthesizeConfig", teacher: str, seed: int,
                   usage: Usage) -> dict[str, Problem]:
    """Solve each live candidate k times, vote, and return the accepted problems by candidate id."""
    params = cfg.solve_sampling.params(seed)
    live = [c for c in cands if c.reason is None]
    plans = {}
    for c in live:
        prompt_key = LEVELS[c.level].solve_prompt
        problem = Problem(c.id, c.question or "", None, None, "synth", {"prompt": prompt_key})
        messages = build_messages(get_prompt(prompt_key), problem)
        plans[c.id] = [plan(ctx, teacher, problem, prompt_key, messages, params, i) for i in range(cfg.k)]
    answered = send(ctx, [p for ps in plans.values() for p in ps], usage, cfg.retry_failed)
    model = ctx.backend(teacher).identity()[0]
    accepted = {}
    for c in live:
        texts = [answered[p.request.key].text if p.request.key in answered else None for p in plans[c.id]]
        vote = pseudo_gold(texts, cfg.extractors)
        c.meta = {"answers": vote.answers, "agreement": vote.agreement}
        c.reason = vote.reject_reason(cfg.min_agreement)
        if c.reason is None:
            meta = {"level": c.level, "method": c.method, "seed_id": c.source_id, "agreement": vote.agreement,
                    "votes": vote.votes, "k": cfg.k, "answered": vote.answered, "solver": model,
                    "prompt": LEVELS[c.level].solve_prompt, "pseudo_gold": True}
            solution = texts[vote.solution_index] if vote.solution_index is not None else None
            accepted[c.id] = Problem(c.id, c.question or "", vote.answer, solution, "synth", meta)
    return accepted


def yields(cands: list[Candidate], key: str) -> dict[str, dict[str, Any]]:
    """Per level (or method): candidates, kept, yield, and rejects by reason kind."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[getattr(c, key)].append(c)
    out = {}
    for name, cs in groups.items():
        kept = sum(c.reason is None for c in cs)
        reasons = Counter(c.reason.split(":", 1)[0] for c in cs if c.reason)
        out[name] = {"candidates": len(cs), "kept": kept, "yield": round(kept / len(cs), 4), "rejected": dict(reasons)}
    return out


def synthesize(
    ctx: "RunContext",
    seeds: list[Problem],
    passages: list[Passage],
    cfg: "SynthesizeConfig",
    generator: str,
    solver: str,
    index: BenchmarkIndex | None = None,
) -> SynthResult:
    """Write, check, screen, solve and vote; return the new problems, the rejects and the per-level yields."""
    seed = cfg.seed if cfg.seed is not None else ctx.seed
    usage = {"write": Usage(), "solve": Usage()}
    cands = plan_candidates(seeds, passages, cfg)
    write_problems(ctx, cands, cfg, generator, seed, usage["write"])
    screen(cands, seeds, cfg, index)
    accepted = solve_and_vote(ctx, cands, cfg, solver, seed, usage["solve"])
    problems = [accepted[c.id] for c in cands if c.id in accepted]
    by_id = {c.id: c for c in cands}
    for p in problems:  # what the writer saw, so the accepted pairs can train a synthesiser (export style synthesis)
        p.meta.update(source_text=by_id[p.id].source_text, writer=generator,
                      writer_model=ctx.backend(generator).identity()[0])
    rejects = [(c.record(), c.reason) for c in cands if c.reason is not None]
    metrics = {
        "seeds": len(seeds),
        "passages": len(passages),
        "candidates": len(cands),
        "problems": len(problems),
        "rejected": dict(Counter(r.split(":", 1)[0] for _, r in rejects)),
        "mean_agreement": round(sum(p.meta["agreement"] for p in problems) / len(problems), 4) if problems else None,
        "levels": yields(cands, "level"),
        "methods": yields(cands, "method"),
        "requests": {k: u.as_dict() for k, u in usage.items()},
        "sent": sum(u.as_dict()["sent"] for u in usage.values()),
    }
    return SynthResult(problems, rejects, metrics)
