"""Synthesis pairs as SFT chats: the writer's prompt (seed or passage, method, level) → the accepted new problem.

The chat is exactly what ``synthesize`` sends its generator, so a model fine-tuned on these rows can be used as the
generator of a later synthesize stage (JiuZhang3.0's distilled synthesiser) with no prompt of its own.
"""

from __future__ import annotations

from typing import Any, Iterable

from mathforge.records import Problem
from mathforge.synth.prompts import FROM_TEXT, passage_messages, seed_messages


def synthesis_rows(problems: Iterable[Problem], *, with_solution: bool = False) -> list[dict[str, Any]]:
    """One chat row per synthesised problem that records its source (others are not synthesis pairs)."""
    rows = []
    for p in problems:
        m = p.meta
        if p.source != "synth" or not m.get("source_text") or m.get("method") is None:
            continue
        prompt = (passage_messages(m["source_text"], m["level"]) if m["method"] == FROM_TEXT
                  else seed_messages(m["source_text"], m["method"], m["level"]))
        reply = f"Problem: {p.question.strip()}"
        if with_solution and p.solution:
            reply += f"\nSolution: {p.solution.strip()}"
        rows.append({"id": p.id, "problem_id": str(m.get("seed_id") or p.id), "teacher": m.get("writer"),
                     "model": m.get("writer_model"), "method": m["method"], "level": m["level"],
                     "messages": [*prompt, {"role": "assistant", "content": reply}]})
    return rows


def export_synthesis(problems: Iterable[Problem], out: Any, cfg: Any, seed: int) -> dict[str, dict[str, int]]:
    """Write ``<out>/synthesis/{train,validation}.*``, split by seed (or passage) so validation sources are unseen."""
    from mathforge.export import SPLITS, split_problems, write_split_files

    rows = synthesis_rows(problems, with_solution=cfg.synthesis_solution)
    held_out = split_problems([r["problem_id"] for r in rows], cfg.validation_fraction,
                              cfg.seed if cfg.seed is not None else seed)
    splits = {sp: [r for r in rows if (r["problem_id"] in held_out) == (sp == "validation")] for sp in SPLITS}
    write_split_files(out, "synthesis", splits, cfg.formats)
    return {sp: {"rows": len(splits[sp]), "problems": len({r["problem_id"] for r in splits[sp]})} for sp in SPLITS}
