"""Majority vote by equivalence class: maj@k answers for self-consistency and pseudo-gold labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from mathforge.verify.normalize import canon_text, format_rational, to_rational


@dataclass
class MajorityResult:
    """The winning answer (first-seen representative of the largest class), its share of all answers, the classes."""

    answer: str | None
    share: float
    classes: list[tuple[str, int, list[int]]] = field(default_factory=list)


def _key(answer: str) -> tuple[str, str]:
    """Cheap exact key: ``("num", p/q)`` for plain numbers, else ``("text", canonical text)``."""
    q = to_rational(answer)
    return ("num", format_rational(q)) if q is not None else ("text", canon_text(answer))


def majority_vote(answers: list[str | None], *, timeout: float = 5.0, workers: int | None = None) -> MajorityResult:
    """Group extracted answers into equivalence classes (exact keys, then math-verify between class representatives).

    ``share`` is the winner's count over all answers, None included; ties go to the class seen first.
    A pair whose symbolic check times out or errors counts as different.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i, ans in enumerate(answers):
        if ans is not None and ans.strip():
            groups.setdefault(_key(ans), []).append(i)
    keys = list(groups)
    merged: list[list[tuple[str, str]]] = []
    pool = None
    for key in keys:
        home = None
        for cls in merged:
            rep = cls[0]
            if key[0] == "num" and rep[0] == "num":
                continue  # distinct exact values never merge
            if pool is None:
                from mathforge.verify.pool import get_pool

                pool = get_pool(workers)
            rep_answer, ans = answers[groups[rep][0]], answers[groups[key][0]]
            status, value = pool.call("compare", (ans, rep_answer, False, False), timeout)
            if status == "ok" and isinstance(value, dict) and value.get("correct"):
                home = cls
                break
        if home is None:
            merged.append([key])
        else:
            home.append(key)
    classes = []
    for cls in merged:
        members = sorted(i for key in cls for i in groups[key])
        classes.append((answers[members[0]], len(members), members))  # type: ignore[arg-type]
    classes.sort(key=lambda c: (-c[1], c[2][0]))
    if not classes:
        return MajorityResult(None, 0.0, [])
    return MajorityResult(classes[0][0], classes[0][1] / len(answers), classes)
