"""Benchmark the verifier against math-verify (same process): accuracy, GSM8K throughput, pathological inputs.

    python bench/verify.py [--data ../shared/data] [--quick]

Prints a table per benchmark and writes bench/results/verify.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from math_verify import parse, verify

from mathforge.verify import check, verify_rows

logging.getLogger("math_verify").setLevel(logging.CRITICAL)
ROOT = Path(__file__).resolve().parent


def mv_plain(pred: str, gold: str) -> bool:
    """math-verify as documented: parse both sides, verify."""
    return bool(verify(parse(gold), parse(pred)))


def mv_wrapped(pred: str, gold: str, pred_full: bool, gold_full: bool) -> bool:
    """math-verify with bare answers wrapped in $...$ (its best use; needs the answer/full labels)."""
    g = parse(gold if gold_full else f"${gold}$") or parse(gold)
    p = parse(pred if pred_full else f"${pred}$") or parse(pred)
    return bool(verify(g, p))


def bench_accuracy(data: Path) -> tuple[list[str], dict]:
    """Agreement with the audited labels on the scored cases."""
    rows = [json.loads(line) for line in open(data / "verify-cases" / "cases.jsonl", encoding="utf-8")]
    rows = [r for r in rows if not (r["ambiguous"] or r["needs_context"])]
    systems = {"mathforge": [], "math-verify (plain)": [], "math-verify (wrapped)": []}
    times = dict.fromkeys(systems, 0.0)
    for r in rows:
        t = time.perf_counter()
        systems["mathforge"].append(check(r["pred"], r["gold"], timeout=5.0).correct is True)
        times["mathforge"] += time.perf_counter() - t
        t = time.perf_counter()
        systems["math-verify (plain)"].append(mv_plain(r["pred"], r["gold"]))
        times["math-verify (plain)"] += time.perf_counter() - t
        t = time.perf_counter()
        systems["math-verify (wrapped)"].append(
            mv_wrapped(r["pred"], r["gold"], r["pred_type"] == "full", r["gold_type"] == "full")
        )
        times["math-verify (wrapped)"] += time.perf_counter() - t
    lines = [
        f"Scored cases: {len(rows)} (ambiguous / needs_context skipped).",
        "",
        "| system | agreement | false positives | false negatives | cases/s |",
        "|---|---|---|---|---|",
    ]
    stats = {}
    for name, preds in systems.items():
        agree = sum(p == r["equal"] for p, r in zip(preds, rows))
        fp = [r["id"] for p, r in zip(preds, rows) if p and not r["equal"]]
        fn = [r["id"] for p, r in zip(preds, rows) if not p and r["equal"]]
        stats[name] = {"agree": agree, "fp": fp, "fn": fn}
        lines.append(
            f"| {name} | {agree}/{len(rows)} = {agree / len(rows):.1%} | {len(fp)} | {len(fn)} | "
            f"{len(rows) / times[name]:.0f} |"
        )
    lines += ["", f"mathforge false positives (case ids): {stats['mathforge']['fp']}",
              f"mathforge false negatives (case ids): {stats['mathforge']['fn']}"]
    return lines, stats


def gsm8k_pairs(data: Path, n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """``n`` (solution text, gold, label) pairs in three answer styles, 20% with a perturbed gold."""
    rng = random.Random(seed)
    problems = [json.loads(line) for line in open(data / "gsm8k" / "test.jsonl", encoding="utf-8")]
    pairs = []
    for i in range(n):
        sol = problems[i % len(problems)]["answer"]
        body, answer = sol.rsplit("####", 1)
        answer = answer.strip().replace(",", "")
        style = (i // len(problems) + i) % 3
        text = [sol, f"{body.rstrip()}\nThe answer is {answer}.", f"{body.rstrip()}\nSo the final answer is $\\boxed{{{answer}}}$."][style]
        gold, label = answer, True
        if rng.random() < 0.2:
            value = int(answer) if answer.lstrip("-").isdigit() else float(answer)
            gold = str(rng.choice([value + 1, value - 1, value * 10, -value if value else 7, value + 1000000]))
            label = False
        pairs.append((text, gold, label))
    return pairs


def bench_gsm8k(data: Path, n: int, mv_n: int) -> tuple[list[str], dict]:
    """Throughput and errors of check() in one process vs math-verify, and verify_rows over the batch."""
    pairs = gsm8k_pairs(data, n)
    t = time.perf_counter()
    ours = [check(text, gold).correct for text, gold, _ in pairs]
    ours_s = time.perf_counter() - t
    fp = sum(1 for v, (_, _, lab) in zip(ours, pairs) if v and not lab)
    fn = sum(1 for v, (_, _, lab) in zip(ours, pairs) if not v and lab)
    t = time.perf_counter()
    rows = verify_rows([{"text": text, "gold": gold} for text, gold, _ in pairs])
    batch_s = time.perf_counter() - t
    batch_err = sum(1 for r, (_, _, lab) in zip(rows, pairs) if bool(r["correct"]) != lab)
    sub = pairs[:mv_n]
    t = time.perf_counter()
    mv = [mv_plain(text, gold) for text, gold, _ in sub]
    mv_s = time.perf_counter() - t
    mv_fp = sum(1 for v, (_, _, lab) in zip(mv, sub) if v and not lab)
    mv_fn = sum(1 for v, (_, _, lab) in zip(mv, sub) if not v and lab)
    ours_rate, mv_rate = len(pairs) / ours_s, len(sub) / mv_s
    lines = [
        f"{len(pairs)} pairs from GSM8K test solutions (`####`, \"The answer is\", `\\boxed{{}}` styles; "
        f"{sum(not p[2] for p in pairs)} with a perturbed gold).",
        "",
        "| system | cases | false positives | false negatives | cases/s |",
        "|---|---|---|---|---|",
        f"| mathforge `check` (one process) | {len(pairs)} | {fp} | {fn} | {ours_rate:,.0f} |",
        f"| mathforge `verify_rows` (batch) | {len(pairs)} | {batch_err} (errors, FP+FN) | | {len(pairs) / batch_s:,.0f} |",
        f"| math-verify parse+verify | {len(sub)} (first) | {mv_fp} | {mv_fn} | {mv_rate:,.0f} |",
        "",
        f"Speed ratio (check vs math-verify, one process): **{ours_rate / mv_rate:.0f}x**.",
    ]
    return lines, {"fp": fp, "fn": fn, "ratio": ours_rate / mv_rate}


PATHOLOGICAL = {
    "power tower 5^{5^{5^{5^5}}}": ("The answer is $\\boxed{5^{5^{5^{5^5}}}}$.", "5"),
    "huge factorial 1000000!": ("The answer is $\\boxed{1000000!}$.", "3"),
    "factorial of a power (10^{10})!": ("The answer is $\\boxed{(10^{10})!}$.", "3"),
    "nested braces depth 2000": ("\\boxed{" + "{" * 2000 + "1" + "}" * 2000 + "}", "1"),
    "unclosed boxes x 14k (100 KB)": ("\\boxed{" * 14000, "1"),
    "100 KB prose + #### 7": ("lorem 12 ipsum $3 dolor " * 4200 + "\n#### 7", "7"),
    "100 KB of digits": ("9" * 100_000, "9"),
    "100 KB LaTeX sum": ("$" + "+".join(["x^{2}"] * 16000) + "$", "x"),
}


def _mv_time_in_subprocess(pred: str, gold: str, cap: float) -> str:
    """math-verify's own time on one input, run in a child killed after ``cap`` seconds."""
    code = (
        "import sys,json,time;from math_verify import parse,verify;p,g=json.load(sys.stdin);"
        "t=time.time();verify(parse(g),parse(p));print(time.time()-t)"
    )
    t = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([pred, gold]), capture_output=True,
                             text=True, timeout=cap)
        return f"{time.perf_counter() - t:.1f}s" if out.returncode == 0 else f"error after {time.perf_counter() - t:.1f}s"
    except subprocess.TimeoutExpired:
        return f"> {cap:g}s (killed)"


def bench_pathological(limit: float, mv_cap: float) -> tuple[list[str], bool]:
    lines = [
        f"Time limit {limit:g}s; each must return within limit + 1 s. math-verify (its own 5 s SIGALRM timeouts) "
        f"is run in a child process killed after {mv_cap:g}s.",
        "",
        "| input | mathforge time | method | within limit+1s | math-verify |",
        "|---|---|---|---|---|",
    ]
    all_ok = True
    for name, (pred, gold) in PATHOLOGICAL.items():
        t = time.perf_counter()
        v = check(pred, gold, timeout=limit)
        dt = time.perf_counter() - t
        ok = dt <= limit + 1
        all_ok &= ok
        mv = _mv_time_in_subprocess(pred, gold, mv_cap)
        lines.append(f"| {name} | {dt:.2f}s | {v.method} | {'yes' if ok else 'NO'} | {mv} |")
    return lines, all_ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="1,000 GSM8K pairs instead of 10,000")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "verify.md")
    args = ap.parse_args()
    check("1", "\\sqrt{1}")  # start the worker pool before timing anything
    bench_accuracy(args.data)  # warm-up pass: ANTLR's parser caches are per process (workers and this one alike)
    sections = []
    acc, _ = bench_accuracy(args.data)
    sections.append(("1. Accuracy on audited equivalence cases", acc))
    gsm, _ = bench_gsm8k(args.data, 1000 if args.quick else 10_000, 1000)
    sections.append(("2. GSM8K workload", gsm))
    path, _ = bench_pathological(limit=3.0, mv_cap=20.0)
    sections.append(("3. Pathological inputs", path))
    header = [
        "# Verify benchmark",
        "",
        f"`python bench/verify.py` on {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    body = header + [line for title, lines in sections for line in (f"## {title}", "", *lines, "")]
    text = "\n".join(body)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
