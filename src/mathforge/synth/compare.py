"""Teacher-made vs student-made problems side by side: acceptance, agreement, diversity, difficulty, teacher cost.

- acceptance: accepted problems / problem-writing requests (candidates) of the synthesize stage;
- agreement: mean share of the k solutions that agreed with the pseudo-gold;
- diversity: distinct word 2- and 3-grams over all n-grams of the problem texts, and the share of problems with a
  MinHash near-duplicate (Jaccard ≥ ``near_threshold``) among the others of the same set;
- difficulty: the solve rate of one fixed solver (greedy, its answer verified against the pseudo-gold);
- teacher requests per accepted problem: what the teacher was asked to write and to solve for this set, plus, for a
  distilled synthesiser, the teacher requests that made its training data spread over its accepted problems.
"""

from __future__ import annotations

from typing import Any, Sequence

from mathforge.records import Problem


def distinct_ngrams(texts: Sequence[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over the texts (1.0: no n-gram repeats anywhere)."""
    from mathforge.curate.ngrams import tokenize

    tokens = tokenize(list(texts))
    seen, total = set(), 0
    for i in range(len(texts)):
        words = tokens.words(i)
        grams = [tuple(words[j: j + n]) for j in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else None


def near_duplicate_share(texts: Sequence[str], threshold: float, seed: int = 1) -> float | None:
    """Share of texts that have a near-duplicate (MinHash Jaccard ≥ threshold) among the earlier texts."""
    from mathforge.curate.dedup import near_duplicates, signatures

    if not texts:
        return None
    hits = near_duplicates(signatures(list(texts), seed=seed), threshold, seed=seed)
    return round(sum(h is not None for h in hits) / len(texts), 4)


def set_metrics(problems: Sequence[Problem], synth: dict[str, Any], near_threshold: float) -> dict[str, Any]:
    """Everything but difficulty and teacher cost for one set of synthesised problems."""
    texts = [p.question for p in problems]
    agreements = [p.meta["agreement"] for p in problems if p.meta.get("agreement") is not None]
    candidates = synth.get("candidates") or 0
    return {
        "problems": len(problems),
        "candidates": candidates,
        "acceptance": round(len(problems) / candidates, 4) if candidates else None,
        "mean_agreement": round(sum(agreements) / len(agreements), 4) if agreements else None,
        "distinct_2": distinct_ngrams(texts, 2),
        "distinct_3": distinct_ngrams(texts, 3),
        "near_duplicate_share": near_duplicate_share(texts, near_threshold),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1) if texts else None,
    }


def teacher_requests(synth: dict[str, Any], writer_is_teacher: bool, solver_is_teacher: bool) -> int:
    """Requests that this set's synthesize stage sent to the teacher (writing and/or solving)."""
    req = synth.get("requests", {})
    return ((req.get("write", {}).get("sent", 0) if writer_is_teacher else 0)
            + (req.get("solve", {}).get("sent", 0) if solver_is_teacher else 0))


def solve_rate(ctx: Any, problems: Sequence[Problem], solver: str, max_tokens: int, seed: int) -> float | None:
    """Share of problems the fixed solver answers right greedily (against each problem's pseudo-gold)."""
    from mathforge.backends import SamplingParams
    from mathforge.prompts import build_messages, get_prompt
    from mathforge.refine.send import Usage, plan, send
    from mathforge.verify.check import check

    if not problems:
        return None
    params = SamplingParams(0.0, 1.0, max_tokens, seed, None)
    planned = []
    for p in problems:
        key = p.meta.get("prompt") or "cot"
        planned.append(plan(ctx, solver, p, key, build_messages(get_prompt(key), p), params, 0))
    answered = send(ctx, planned, Usage())
    right = sum(1 for p, pl in zip(problems, planned)
                if pl.request.key in answered and check(answered[pl.request.key].text, p.answer).correct is True)
    return round(right / len(problems), 4)
