"""A seeded family of one- and two-step word problems with small numbers and GSM8K-style reference solutions.

It is the in-domain task of the self-improvement experiment (``bench/science.py``): hard enough that the embedded
SmolLM2-135M gets a minority of it right, easy enough that it gets some right, so that training on its own verified
samples can be measured. Each problem comes with a reference solution in GSM8K's form (``<<a+b=c>>`` calculator
annotations and a final ``#### N`` line), so the curate stage's step check and RFT distinct paths apply to it, and
the ``reference_sft`` stage can train on it.

Disjointness by construction: every problem is a kind plus a tuple of numbers, and each (kind, numbers) combination
is assigned to exactly one split before any wording is chosen. A held-out problem therefore never shares its
arithmetic with a training problem, whatever the names and objects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMES = ("Tom", "Mia", "Sam", "Ana", "Ben", "Lily", "Omar", "Zoe", "Leo", "Nina", "Raj", "Emma")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards", "balloons", "stamps")
CONTAINERS = ("bags", "boxes", "jars", "packs", "baskets")
FRIENDS = ("a friend", "a classmate", "a neighbour", "a cousin")


@dataclass(frozen=True)
class Kind:
    """One problem shape: the numbers it takes, how they are worded and how they are solved."""

    name: str
    steps: int
    numbers: Callable[[], Iterator[tuple[int, ...]]]  # every admissible tuple, in a fixed order
    question: str  # formatted with name, item, container, friend and a, b, c
    solution: Callable[[dict[str, Any]], tuple[str, int]]  # -> (reference solution without the #### line, answer)


def _calc(a: int, op: str, b: int) -> tuple[str, int]:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"{a} {op} {b} = <<{a}{op}{b}={value}>>{value}", value


def _add(v: dict[str, Any]) -> tuple[str, int]:
    text, n = _calc(v["a"], "+", v["b"])
    return f"{v['name']} has {text} {v['item']} now.", n


def _sub(v: dict[str, Any]) -> tuple[str, int]:
    text, n = _calc(v["a"], "-", v["b"])
    return f"{v['name']} has {text} {v['item']} left.", n


def _mul(v: dict[str, Any]) -> tuple[str, int]:
    text, n = _calc(v["a"], "*", v["b"])
    return f"{v['name']} buys {text} {v['item']}.", n


def _mul_add(v: dict[str, Any]) -> tuple[str, int]:
    t1, m = _calc(v["a"], "*", v["b"])
    t2, n = _calc(m, "+", v["c"])
    return f"The {v['container']} hold {t1} {v['item']}.\nIn total there are {t2} {v['item']}.", n


def _add_sub(v: dict[str, Any]) -> tuple[str, int]:
    t1, m = _calc(v["a"], "+", v["b"])
    t2, n = _calc(m, "-", v["c"])
    return f"After buying, {v['name']} has {t1} {v['item']}.\nAfter giving some away, {v['name']} has {t2} {v['item']}.", n


KINDS: tuple[Kind, ...] = (
    Kind("add", 1, lambda: ((a, b) for a in range(2, 15) for b in range(2, 10)),
         "{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", _add),
    Kind("sub", 1, lambda: ((a, b) for a in range(6, 20) for b in range(2, 10)),
         "{name} has {a} {item} and gives {b} of them to {friend}. How many {item} does {name} have left?", _sub),
    Kind("mul", 1, lambda: ((a, b) for a in range(2, 10) for b in range(2, 15)),
         "{name} buys {a} {container} of {item}. Each of the {container} has {b} {item}. "
         "How many {item} does {name} buy?", _mul),
    Kind("mul-add", 2, lambda: ((a, b, c) for a in range(2, 6) for b in range(2, 6) for c in range(2, 10)),
         "{name} has {a} {container} with {b} {item} in each, and {c} more {item} on the table. "
         "How many {item} does {name} have in all?", _mul_add),
    Kind("add-sub", 2, lambda: ((a, b, c) for a in range(2, 10) for b in range(2, 10) for c in range(2, 10)
                                if c < a + b),
         "{name} has {a} {item} and buys {b} more. Then {name} gives {c} {item} to {friend}. "
         "How many {item} does {name} have now?", _add_sub),
)


def make_family(seed: int = 0, n_train: int = 200, n_test: int = 300) -> dict[str, list[dict[str, Any]]]:
    """``{"train": rows, "test": rows}``: GSM8K-shaped rows (id, question, answer, kind, steps), kinds balanced.

    Each kind's number tuples are shuffled with ``seed`` and cut in two, the first part drawn from for test and the
    rest for train, so no (kind, numbers) pair is in both splits.
    """
    rng = random.Random(seed)
    per_kind = {"train": _shares(n_train, len(KINDS)), "test": _shares(n_test, len(KINDS))}
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for k, kind in enumerate(KINDS):
        tuples = list(kind.numbers())
        rng.shuffle(tuples)
        n_te, n_tr = per_kind["test"][k], per_kind["train"][k]
        if n_te + n_tr > len(tuples):
            raise ValueError(f"kind {kind.name} has only {len(tuples)} number combinations, asked {n_te + n_tr}")
        for split, chosen in (("test", tuples[:n_te]), ("train", tuples[n_te : n_te + n_tr])):
            out[split] += [_problem(kind, numbers, rng) for numbers in chosen]
    for split, rows in out.items():
        random.Random(seed + 1).shuffle(rows)  # interleave the kinds, so any prefix is balanced
        for i, row in enumerate(rows):
            row["id"] = f"arith/{split}/{i}"
    return out


def _shares(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _problem(kind: Kind, numbers: tuple[int, ...], rng: random.Random) -> dict[str, Any]:
    values = dict(zip("abc", numbers), name=rng.choice(NAMES), item=rng.choice(ITEMS),
                  container=rng.choice(CONTAINERS), friend=rng.choice(FRIENDS))
    text, answer = kind.solution(values)
    return {"id": "", "question": kind.question.format(**values), "answer": f"{text}\n#### {answer}",
            "kind": kind.name, "steps": kind.steps, "numbers": list(numbers)}


def overlap(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, int]:
    """How many test problems share their question text, or their kind and numbers, with a training problem."""
    questions = {r["question"] for r in train}
    arithmetic = {(r["kind"], tuple(r["numbers"])) for r in train}
    return {"question": sum(r["question"] in questions for r in test),
            "arithmetic": sum((r["kind"], tuple(r["numbers"])) in arithmetic for r in test)}


def write_family(out_dir: str | Path, seed: int = 0, n_train: int = 200, n_test: int = 300) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` (one JSON object per line, keys sorted) and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in make_family(seed, n_train, n_test).items():
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return paths


def combinations() -> dict[str, int]:
    """How many distinct (numbers) tuples each kind has: the most problems the family can make per kind."""
    return {k.name: sum(1 for _ in k.numbers()) for k in KINDS}


__all__ = ["KINDS", "Kind", "combinations", "make_family", "overlap", "write_family"]
