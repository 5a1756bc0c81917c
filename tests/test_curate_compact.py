"""Curation over compact per-record state (digest indexes, arrays) decides exactly as list-and-dict code does."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np

from mathforge.curate import CurateConfig, curate
from mathforge.curate import streaming
from mathforge.curate.compact import KeyIndex, Strings, cluster_roots, cluster_stats, first_occurrence
from mathforge.curate.decontam import build_index
from mathforge.curate.dedup import exact_duplicates, near_duplicates, signatures
from mathforge.curate.filters import apply_filters, build_filters
from mathforge.curate.rft import select_paths

LEAK_Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
          "friends every day with four. How much in dollars does she make every day at the farmers' market?")
WORDS = [f"w{i}" for i in range(400)]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(rng: random.Random, text: str) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


def fixture_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """This run's samples and a pooled table: near/exact duplicate problems and solutions, leaks of a benchmark
    question and of a solution quoting it, duplicate ids across the two, filtered and distinct-path samples."""
    rng = random.Random(seed)
    questions: list[str] = []
    for p in range(40):
        kind = rng.random()
        if questions and kind < 0.15:
            questions.append(_edit(rng, rng.choice(questions)))  # near-duplicate problem
        elif questions and kind < 0.22:
            questions.append("  " + rng.choice(questions).upper())  # exact duplicate after normalising
        elif kind < 0.27:
            questions.append(LEAK_Q)  # test leak
        else:
            questions.append(_text(rng, 100))
    rows, n = [], 0
    for p, q in enumerate(questions):
        texts: list[str] = []
        for _ in range(rng.randint(2, 6)):
            r = rng.random()
            if texts and r < 0.2:
                text = _edit(rng, rng.choice(texts))  # near-duplicate solution
            elif texts and r < 0.3:
                text = rng.choice(texts) + "  "  # exact duplicate
            elif r < 0.35:
                text = "Restating: " + LEAK_Q + " " + _text(rng, 20)  # the solution leaks
            elif r < 0.45:
                a, b = rng.randint(2, 9), rng.randint(2, 9)
                text = f"{_text(rng, 30)} so <<{a}*{b}={a * b}>>{a * b} then #### {a * b}"  # an equation path
            else:
                text = _text(rng, 80)
            texts.append(text)
            rows.append({"id": f"s{n}", "problem_id": f"p{p}", "question": q, "gold": "1", "teacher": rng.choice("ab"),
                         "sample_index": n % 7, "text": text, "finish_reason": "length" if rng.random() < 0.05 else "stop",
                         "extracted": "1", "correct": rng.random() > 0.1, "method": "numeric"})
            n += 1
    pooled = [dict(r, teacher="c") for r in rng.sample(rows, 12)]  # same ids: duplicate-id rejects
    pooled += [{**rows[0], "id": f"x{i}", "text": _text(rng, 60), "teacher": "c"} for i in range(5)]
    return rows, pooled


def reference(sources: list[tuple[str, list[dict]]], cfg: CurateConfig, index) -> tuple[list[str], list[tuple]]:
    """The same steps over whole lists with Python dicts and the list-based dedup functions: kept ids, and
    (id, source teacher, reason) per reject (an id pooled twice is rejected once per copy)."""
    reasons: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {}
    pooled: list[dict] = []
    for name, rows in sources:
        for r in rows:
            if r["id"] in seen:
                reasons[r["id"], r["teacher"]] = f"duplicate-id: sample {r['id']} of {name} is already pooled from {seen[r['id']]}"
            else:
                seen[r["id"]] = name
                pooled.append(r)
    rows, dropped = apply_filters(pooled, build_filters(cfg.filters))
    reasons.update({(r["id"], r["teacher"]): why for r, why in dropped})
    pids = list(dict.fromkeys(r["problem_id"] for r in rows))
    question = {r["problem_id"]: r["question"] for r in reversed(rows)}
    problem_hit = dict(zip(pids, index.find([question[p] for p in pids], whole=True)))
    kept = []
    for r, sol_hit in zip(rows, index.find([r["text"] for r in rows])):
        hit, side = (problem_hit[r["problem_id"]], "problem") if problem_hit[r["problem_id"]] else (sol_hit, "solution")
        if hit:
            reasons[r["id"], r["teacher"]] = hit.reason(side)
        else:
            kept.append(r)
    rows = kept
    pids = list(dict.fromkeys(r["problem_id"] for r in rows))
    qs = [question[p] for p in pids]
    exact = exact_duplicates(qs)
    near = near_duplicates(signatures(qs), cfg.dedup.problem_threshold, skip=[e is not None for e in exact])
    roots = list_roots([h and h[0] for h in near])
    bad = {}
    for i, p in enumerate(pids):
        if exact[i] is not None:
            bad[p] = f"duplicate-problem: same question as problem {pids[exact[i]]}"
        elif near[i] is not None:
            root = "" if roots[i] == near[i][0] else f"; its cluster keeps {pids[roots[i]]}"
            bad[p] = f"near-duplicate-problem: of problem {pids[near[i][0]]} (estimated Jaccard {near[i][1]:.2f}{root})"
    out = [r["problem_id"] in bad for r in rows]
    groups = [r["problem_id"] for r in rows]
    exact = exact_duplicates([r["text"] for r in rows], groups, skip=out)
    near = near_duplicates(signatures([r["text"] for r in rows]), cfg.dedup.solution_threshold, groups,
                           skip=[o or e is not None for o, e in zip(out, exact)])
    roots = list_roots([h and h[0] for h in near])
    passing = []
    for i, r in enumerate(rows):
        if out[i]:
            reasons[r["id"], r["teacher"]] = bad[r["problem_id"]]
        elif exact[i] is not None:
            reasons[r["id"], r["teacher"]] = f"duplicate-solution: same text as sample {rows[exact[i]]['id']}"
        elif near[i] is not None:
            root = "" if roots[i] == near[i][0] else f"; its cluster keeps {rows[roots[i]]['id']}"
            reasons[r["id"], r["teacher"]] = (f"near-duplicate-solution: of sample {rows[near[i][0]]['id']} "
                                f"(estimated Jaccard {near[i][1]:.2f}{root})")
        else:
            passing.append(r)
    kept, rejected = select_paths(passing, cfg.rft)
    reasons.update({(r["id"], r["teacher"]): why for r, why in rejected})
    return [r["id"] for r in kept], sorted((*k, why) for k, why in reasons.items())


def test_compact_curation_equals_list_reference_and_in_memory_curate(tmp_path, monkeypatch):
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(json.dumps({"question": LEAK_Q, "answer": "#### 18"}) + "\n", encoding="utf-8")
    cfg = CurateConfig(decontam={"benchmarks": [{"name": "gsm8k", "path": str(bench), "split": None}]})
    index = build_index(cfg.decontam)
    data, pooled = fixture_rows()
    want_kept, want_reasons = reference([("this run", data), ("other", pooled)], cfg, index)
    kinds = {why.split(":")[0] for *_, why in want_reasons}
    assert {"duplicate-id", "test-leak", "duplicate-problem", "near-duplicate-problem", "duplicate-solution",
            "near-duplicate-solution", "truncated", "incorrect"} <= kinds, kinds  # the fixture exercises every step
    assert any("solution overlaps" in why for *_, why in want_reasons)

    whole = curate(data, cfg, pooled=[("other", pooled)], index=index)
    assert sorted(r["id"] for r in whole.kept) == sorted(want_kept)
    assert sorted((r["id"], r["teacher"], why) for r, why in whole.rejected) == want_reasons

    monkeypatch.setattr(streaming, "RFT_BUCKET", 10)  # several RFT partitions
    kept, rejected = [], []
    funnel, report = streaming.curate_stream(
        [("this run", (data[i:i + 7] for i in range(0, len(data), 7))), ("other", [pooled[:5], pooled[5:]])], cfg,
        index=index, emit=kept.extend, reject=rejected.extend, work_dir=tmp_path)
    assert sorted(r["id"] for r in kept) == sorted(want_kept)
    assert sorted((r["id"], r["teacher"], why) for r, why in rejected) == want_reasons
    assert report["problems_out"] == len({r["problem_id"] for r in kept}) == whole.report["problems_out"]
    assert report["dedup_problems"] == whole.report["dedup_problems"]
    assert funnel.records_out == len(want_kept)

    # The per-batch step prepared ahead on "workers" (as the Ray executor's imap does: batches taken several ahead,
    # the step and its results pickled across): the same records, rejects and reasons, in the same order.
    ahead_kept, ahead_rejected = [], []
    _, ahead_report = streaming.curate_stream(
        [("this run", (data[i:i + 7] for i in range(0, len(data), 7))), ("other", [pooled[:5], pooled[5:]])], cfg,
        index=index, emit=ahead_kept.extend, reject=ahead_rejected.extend, work_dir=tmp_path, imap=lookahead)
    assert [r["id"] for r in ahead_kept] == [r["id"] for r in kept]
    assert [(r["id"], why) for r, why in ahead_rejected] == [(r["id"], why) for r, why in rejected]
    assert ({k: v for k, v in ahead_report.items() if k != "funnel"}
            == {k: v for k, v in report.items() if k != "funnel"})


def lookahead(fn, items, window: int = 5):
    """An ordered map that takes ``window`` items ahead of the result it hands out, each run on a pickled copy."""
    import pickle
    from collections import deque

    worker = pickle.loads(pickle.dumps(fn))
    taken: deque = deque()
    for item in items:
        taken.append(pickle.loads(pickle.dumps(item)))
        if len(taken) >= window:
            yield pickle.loads(pickle.dumps(worker(taken.popleft())))
    while taken:
        yield pickle.loads(pickle.dumps(worker(taken.popleft())))


def test_key_index_codes_in_order_of_first_appearance():
    idx = KeyIndex()
    codes, new = idx.add(["b", "a", "b", "c"])
    assert codes.tolist() == [0, 1, 0, 2] and new.tolist() == [True, True, False, True]
    codes, new = idx.add(["c", "d", "a", "d"])
    assert codes.tolist() == [2, 3, 1, 3] and new.tolist() == [False, True, False, False]
    assert idx.lookup(["d", "zz", "b"]).tolist() == [3, -1, 0] and len(idx) == 4
    many = [f"id-{i}" for i in range(5000)]
    rng = random.Random(1)
    rng.shuffle(many)
    for lo in range(0, 5000, 700):
        idx.add(many[lo:lo + 700])
    assert idx.lookup(many).tolist() == [4 + i for i in range(5000)]


def test_key_index_keys_sharing_their_first_digest_half(monkeypatch):
    """Keys whose digests agree in the first 8 bytes (forced here) are still told apart by the second 8."""
    from mathforge.curate import compact

    def clashing(values):
        return np.array([[7, sum(map(ord, v))] for v in values], np.uint64).reshape(-1, 2)

    monkeypatch.setattr(compact, "digests", clashing)
    idx = KeyIndex()
    assert idx.add(["a", "b", "c"])[0].tolist() == [0, 1, 2]
    assert idx.add(["c", "b", "d", "a"])[0].tolist() == [2, 1, 3, 0]


def test_strings_and_arrays_read_back():
    s = Strings()
    s.extend(["x", "ünï"])
    s.extend([])
    s.extend(["z"])
    assert [s[i] for i in range(len(s))] == ["x", "ünï", "z"]
    keys = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6]], np.uint64)
    assert first_occurrence(keys).tolist() == [0, 1, 0, 1, 4]
    dup = [None, 0, 1, None, 3, 2, None]
    arr = np.array([-1 if d is None else d for d in dup])
    assert cluster_roots(arr).tolist() == list_roots(dup)
    assert cluster_stats(arr) == list_stats(dup)


def list_roots(duplicate_of: list) -> list[int]:
    """Reference: for each text, the first text of its cluster (links point backwards)."""
    roots: list[int] = []
    for i, d in enumerate(duplicate_of):
        roots.append(i if d is None else roots[d])
    return roots


def list_stats(duplicate_of: list) -> dict[str, int]:
    """Reference: clusters with at least one duplicate, the largest cluster, and duplicates found."""
    roots = list_roots(duplicate_of)
    sizes = Counter(roots[i] for i, d in enumerate(duplicate_of) if d is not None)
    return {"clusters": len(sizes), "largest": max(sizes.values(), default=0) + (1 if sizes else 0),
            "duplicates": sum(sizes.values())}
