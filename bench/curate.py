"""Benchmark curation: 100,000 GSM8K-style solutions with planted duplicates, near-duplicates and test-set leaks.

    python bench/curate.py [--data ../shared/data] [--n 100000] [--skip-baseline]

Builds the solutions from GSM8K train (rewrites of each reference solution by three "teachers": calculator
annotations or inline arithmetic, varied connectives, some commuted operands = distinct paths, some wrong steps,
wrong answers and truncations), plants exact and near-duplicate solutions and GSM8K test problems (verbatim and
lightly edited), then runs the curate stage end to end (read table, filters, decontamination against five benchmarks,
dedup, RFT, write tables) in a fresh process, and the same with dedup + decontamination done as a plain datasketch
loop (``MinHash`` + ``update_batch`` + ``MinHashLSH`` per text, Python sets of 13-gram tuples), for wall time, peak
memory (ru_maxrss) and recall of the plants. Writes bench/results/curate.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
CONNECTIVES = ["", "So ", "Then ", "Next, ", "This means ", "Therefore ", "Now ", "We get that "]
OPENERS = ["", "Let's think step by step.\n", "We solve this one step at a time.\n", "Here is the solution.\n"]
FINALS = ["#### {a}", "The answer is {a}.", "#### {a}", "So the final answer is {a}.\n#### {a}"]
SYNONYMS = {"total": "sum", "each": "every", "buys": "purchases", "has": "owns", "makes": "earns", "needs": "requires",
            "left": "remaining", "per": "for each", "twice": "two times", "half": "one half"}
NAMES = ["Alex", "Maria", "Chen", "Fatima", "Lukas", "Priya", "Tom", "Zoe"]
BENCHMARKS = [("gsm8k", "gsm8k", "test"), ("math", "math", "test"), ("math500", "math500", "test"),
              ("svamp", "svamp/SVAMP.json", None), ("mathqa", "mathqa", "test")]


def rewrite(solution: str, rng: random.Random, inline: bool, commute: bool) -> str:
    """A teacher-style rewrite of a GSM8K reference solution (same path unless ``commute``)."""
    body, _, answer = solution.rpartition("####")
    lines = [ln for ln in body.strip().split("\n") if ln.strip()]
    out = []
    for i, line in enumerate(lines):
        if commute:
            line = ANNOT.sub(lambda m: _commuted(m), line, count=1)
            commute = line == lines[i]  # keep trying on later lines until one equation was commuted
        if inline:
            line = ANNOT.sub("", line)
        out.append(rng.choice(CONNECTIVES) + line[0].lower() + line[1:] if i else line)
    final = rng.choice(FINALS).format(a=answer.strip())
    return rng.choice(OPENERS) + "\n".join(out) + "\n" + final


def _commuted(m: re.Match) -> str:
    lhs = m.group(1)
    parts = re.fullmatch(r"\s*([\d.]+)\s*([+*])\s*([\d.]+)\s*", lhs)
    if not parts:
        return m.group(0)
    return f"<<{parts.group(3)}{parts.group(2)}{parts.group(1)}={m.group(2)}>>"


def light_edit(text: str, rng: random.Random) -> str:
    """One small change: a synonym, a dropped filler word, or punctuation."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), len(words)):
        w = words[i].lower().strip(".,")
        if w in SYNONYMS:
            words[i] = words[i].replace(w, SYNONYMS[w])
            return " ".join(words)
    return text.replace(".", "!", 1) if "." in text else text + " Done."


def edit_question(q: str, rng: random.Random) -> str:
    """A lightly edited test question: a name changed, a word swapped, a preamble added."""
    first = re.match(r"[A-Z][a-z]+", q)
    if first and rng.random() < 0.5:
        q = q.replace(first.group(0), rng.choice(NAMES))
    q = light_edit(q, rng)
    return rng.choice(["", "Please solve: ", "Question: "]) + q


def build(data: Path, n: int, seed: int = 0) -> tuple[list[dict], dict[str, set[str]]]:
    """The 100k sample rows and the ids of each kind of plant."""
    rng = random.Random(seed)
    train = [json.loads(line) for line in open(data / "gsm8k" / "train.jsonl", encoding="utf-8")]
    test = [json.loads(line) for line in open(data / "gsm8k" / "test.jsonl", encoding="utf-8")]
    plants = {"exact": set(), "near": set(), "leak-verbatim": set(), "leak-edited": set()}
    n_exact, n_near, n_leak = n // 50, n // 50, 300  # 2% + 2% + 2 x 300 problems x 2 samples
    n_base = n - n_exact - n_near - 4 * n_leak
    rows: list[dict] = []

    def add(pid: str, question: str, text: str, gold: str, i: int, **kw) -> dict:
        row = {"id": f"{pid}#{i}", "problem_id": pid, "question": question, "gold": gold, "teacher": f"t{i % 3}",
               "model": f"model-{i % 3}", "sample_index": i, "prompt_key": "cot", "request_key": f"{pid}#{i}",
               "text": text, "finish_reason": "stop", "extracted": gold, "normalized": gold, "correct": True,
               "method": "numeric-exact", "extractor": "gsm8k-hash", "reason": None, "round": 0}
        row.update(kw)
        rows.append(row)
        return row

    per = -(-n_base // len(train))
    for k in range(per):
        for j, p in enumerate(train):
            if len(rows) >= n_base:
                break
            gold = p["answer"].rpartition("####")[2].strip()
            text = rewrite(p["answer"], rng, inline=rng.random() < 0.5, commute=rng.random() < 0.3)
            r = rng.random()
            if r < 0.15:
                add(f"gsm8k/train/{j}", p["question"], text.replace(f"#### {gold}", "#### 0"), gold, k,
                    correct=False, extracted="0")
            elif r < 0.18:
                add(f"gsm8k/train/{j}", p["question"], text[: len(text) // 2], gold, k, finish_reason="length",
                    extracted=None, correct=None)
            elif r < 0.23:
                add(f"gsm8k/train/{j}", p["question"], ANNOT.sub(lambda m: f"<<{m.group(1)}={m.group(2)}1>>", text,
                                                                  count=1), gold, k)
            else:
                add(f"gsm8k/train/{j}", p["question"], text, gold, k)
    clean = [r for r in rows if r["correct"] is True and "1>>" not in r["text"]]
    for i, orig in enumerate(rng.sample(clean, n_exact)):
        plants["exact"].add(add(orig["problem_id"], orig["question"], orig["text"] + "\n", orig["gold"],
                                1000 + i)["id"])
    for i, orig in enumerate(rng.sample(clean, n_near)):
        twin = add(orig["problem_id"], orig["question"], light_edit(orig["text"], rng), orig["gold"], 2000 + i)
        twin["_original"] = orig["text"]
        plants["near"].add(twin["id"])
    for kind, chosen in (("leak-verbatim", rng.sample(test, n_leak)), ("leak-edited", rng.sample(test, n_leak))):
        for t_i, t in enumerate(chosen):
            gold = t["answer"].rpartition("####")[2].strip()
            q = t["question"] if kind == "leak-verbatim" else edit_question(t["question"], rng)
            for k in range(2):
                text = rewrite(t["answer"], rng, inline=k == 1, commute=False)
                plants[kind].add(add(f"{kind}/{t_i}", q, text, gold, k)["id"])
    return rows, plants


def run_ours(samples: Path, data: Path, workdir: Path) -> dict:
    """The curate stage on a run directory holding the samples table."""
    from mathforge.curate.stage import CurateConfig, CurateStage
    from mathforge.pipeline.context import RunContext
    from mathforge.store import read_rows

    t0 = time.perf_counter()
    ctx = RunContext(workdir / "run")
    ctx.write_samples("verified", read_rows(samples))
    t_load = time.perf_counter() - t0
    refs = [{"name": n, "path": str(data / p), "split": s} for n, p, s in BENCHMARKS]
    cfg = CurateConfig(decontam={"benchmarks": refs})
    t1 = time.perf_counter()
    metrics = CurateStage().run(ctx, cfg)
    wall = time.perf_counter() - t1
    rejected = read_rows(ctx.path("rejected.parquet"))
    steps = json.loads(ctx.path("curate.json").read_text())["funnel"]["steps"]
    return {"wall": wall, "setup": t_load, "accepted": metrics["accepted"],
            "phases": {st["step"]: st["seconds"] for st in steps},
            "reasons": {r["record_id"]: r["reason"].split(":", 1)[0] for r in rejected}}


def run_baseline(samples: Path, data: Path, workdir: Path) -> dict:
    """Plain loops: datasketch MinHash per text + MinHashLSH, exact dedup by set, 13-gram tuples in a Python set."""
    from datasketch import MinHash, MinHashLSH

    from mathforge.curate.decontam import BenchmarkRef, load_benchmarks
    from mathforge.curate.filters import FilterConfig, apply_filters, build_filters
    from mathforge.curate.rft import RFTConfig, select_paths
    from mathforge.store import read_rows

    word = re.compile(r"\w+")
    t0 = time.perf_counter()
    rows = read_rows(samples)
    phases, reasons = {}, {}
    t = time.perf_counter()
    rows, rej = apply_filters(rows, build_filters(FilterConfig()))
    reasons.update({r["id"]: why.split(":", 1)[0] for r, why in rej})
    phases["filters"] = time.perf_counter() - t
    t = time.perf_counter()
    grams: set[tuple[str, ...]] = set()
    for _, p in load_benchmarks([BenchmarkRef(name=n, path=str(data / p), split=s) for n, p, s in BENCHMARKS]):
        for text in (p.question, p.solution or ""):
            w = word.findall(text.lower())
            grams.update(zip(*(w[i:] for i in range(13))))
    kept = []
    for r in rows:
        leak = False
        for text in (r["question"], r["text"]):
            w = word.findall(text.lower())
            if any(g in grams for g in zip(*(w[i:] for i in range(13)))):
                leak = True
                break
        if leak:
            reasons[r["id"]] = "test-leak"
        else:
            kept.append(r)
    rows = kept
    phases["decontam"] = time.perf_counter() - t
    t = time.perf_counter()
    seen, kept = set(), []
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i, r in enumerate(rows):
        norm = (r["problem_id"], " ".join(r["text"].lower().split()))
        if norm in seen:
            reasons[r["id"]] = "duplicate-solution"
            continue
        seen.add(norm)
        w = word.findall(r["text"].lower())
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(g).encode() for g in zip(w, w[1:], w[2:])] or [" ".join(w).encode()])
        if lsh.query(m):
            reasons[r["id"]] = "near-duplicate-solution"
            continue
        lsh.insert(r["id"], m)
        kept.append(r)
    rows = kept
    phases["dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    rows, rej = select_paths(rows, RFTConfig())
    reasons.update({r["id"]: why.split(":", 1)[0] for r, why in rej})
    phases["rft"] = time.perf_counter() - t
    return {"wall": time.perf_counter() - t0, "accepted": len(rows), "reasons": reasons, "phases": phases}


def child(mode: str, samples: Path, data: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_ours if mode == "ours" else run_baseline)(samples, data, Path(tmp))
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps(result))


def measure(mode: str, samples: Path, data: Path, tmp: Path) -> dict:
    out = tmp / f"{mode}.json"
    cmd = [sys.executable, __file__, "--child", mode, "--samples", str(samples), "--data", str(data), "--out", str(out)]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return json.loads(out.read_text())


def recall(result: dict, plants: dict[str, set[str]]) -> dict[str, str]:
    want = {"exact": {"duplicate-solution"}, "near": {"duplicate-solution", "near-duplicate-solution"},
            "leak-verbatim": {"test-leak"}, "leak-edited": {"test-leak"}}
    out = {}
    for kind, ids in plants.items():
        found = sum(1 for i in ids if result["reasons"].get(i) in want[kind])
        missed = Counter(result["reasons"].get(i, "kept") for i in ids if result["reasons"].get(i) not in want[kind])
        out[kind] = f"{found}/{len(ids)} ({found / len(ids):.1%})"
        if missed:
            out[kind] += " [" + ", ".join(f"{k} {n}" for k, n in missed.most_common()) + "]"
    return out


def near_profile(rows: list[dict], originals: dict[str, str]) -> str:
    """How similar the planted near-duplicates are to their originals: true and MinHash-estimated Jaccard."""
    from mathforge.curate.dedup import signatures
    from mathforge.curate.rft import word_shingles

    texts = {r["id"]: r["text"] for r in rows if r["id"] in originals}
    ids = sorted(texts)
    true = [len(a & b) / len(a | b) for a, b in
            ((word_shingles(texts[i]), word_shingles(originals[i])) for i in ids)]
    sa, sb = signatures([texts[i] for i in ids]), signatures([originals[i] for i in ids])
    est = (sa == sb).mean(axis=1)
    share = lambda xs, t: sum(x >= t for x in xs) / len(xs)  # noqa: E731
    return ("Planted near-duplicates vs their originals (word 3-gram shingles): true Jaccard >= 0.8 for "
            f"{share(true, 0.8):.1%}, >= 0.7 for {share(true, 0.7):.1%}; MinHash estimate >= 0.8 for "
            f"{share(est, 0.8):.1%}, >= 0.7 for {share(est, 0.7):.1%}.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--samples", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.samples, args.data, args.out)

    from mathforge.records import SAMPLE_SCHEMA
    from mathforge.store import write_table

    load_at_start = os.getloadavg()[0]
    t = time.perf_counter()
    rows, plants = build(args.data, args.n)
    print(f"built {len(rows):,} samples in {time.perf_counter() - t:.1f}s; plants: "
          + ", ".join(f"{k} {len(v)}" for k, v in plants.items()), flush=True)
    originals = {r["id"]: r.pop("_original") for r in rows if "_original" in r}
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_table(Path(tmp) / "samples.parquet", rows, SAMPLE_SCHEMA)
        results = {"mathforge curate": measure("ours", samples, args.data, Path(tmp))}
        if not args.skip_baseline:
            results["plain datasketch loop"] = measure("baseline", samples, args.data, Path(tmp))
    base_ids = {r["id"] for r in rows} - set().union(*plants.values())
    lines = [f"# curate benchmark: {len(rows):,} GSM8K-style solutions", "",
             "Generated by `python bench/curate.py` (see its docstring for how the solutions and plants are built).", "",
             f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores shared with "
             f"other work (load average {load_at_start:.1f} at start, so absolute times are inflated; both systems "
             "ran back to back in fresh processes).", "",
             f"Plants: {len(plants['exact']):,} exact duplicate solutions (a copy with a trailing newline), "
             f"{len(plants['near']):,} near-duplicates (one synonym or punctuation change), "
             f"{len(plants['leak-verbatim']):,} samples of 300 GSM8K test problems verbatim and "
             f"{len(plants['leak-edited']):,} of 300 lightly edited ones (name, one word, a preamble). "
             "Decontamination against GSM8K test, MATH test, MATH-500, SVAMP and MathQA test through the loaders.", "",
             "| system | wall (s) | peak RSS (MiB) | kept | exact dup | near dup | verbatim leak | edited leak "
             "| other samples flagged as leaks |", "|---|---:|---:|---:|---|---|---|---|---:|"]
    for name, res in results.items():
        rc = recall(res, plants)
        fp = sum(1 for i in base_ids if res["reasons"].get(i) == "test-leak")
        lines.append(f"| {name} | {res['wall']:.1f} | {res['peak_mib']:,.0f} | {res['accepted']:,} | {rc['exact']} "
                     f"| {rc['near']} | {rc['leak-verbatim']} | {rc['leak-edited']} | {fp} |")
    lines += ["", "A plant counts as found when rejected for its own kind; [brackets] say what happened to the others "
              "(an earlier step can remove a plant for another reason, e.g. its problem overlaps the test set)."]
    for name, res in results.items():
        lines += ["", f"Seconds per step, {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res["phases"].items()) + "."]
    ours = results["mathforge curate"]
    lines += ["", "Reasons (mathforge curate): " + ", ".join(
        f"{k} {n:,}" for k, n in Counter(ours["reasons"].values()).most_common()) + "."]
    lines += ["", near_profile(rows, originals)]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "results" / "curate.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
