"""Benchmark the verifier: accuracy (public audited cases and the held-out hard classes), GSM8K throughput and
pathological inputs, for this tree's code and for a baseline commit (``--baseline``, measured in the same run in a
child process that imports the baseline's ``src/`` from ``git archive``), beside math-verify used directly.

    python bench/verify.py [--data ../shared/data] [--quick] [--baseline REV]

Prints the tables and writes bench/results/verify.md, keeping the section between ``<!-- sandbox:begin -->`` and
``<!-- sandbox:end -->`` (written by bench/sandbox.py) as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from math_verify import parse, verify

from mathforge.verify import check, verify_rows

logging.getLogger("math_verify").setLevel(logging.CRITICAL)
ROOT = Path(__file__).resolve().parent
HARD = ROOT.parent / "tests" / "fixtures" / "verify" / "hard_cases.jsonl"
BASELINE = "078793c"  # main just before the verifier classes of issue 11 landed
BEGIN, END = "<!-- sandbox:begin -->", "<!-- sandbox:end -->"


def mv_plain(pred: str, gold: str) -> bool:
    """math-verify as documented: parse both sides, verify."""
    return bool(verify(parse(gold), parse(pred)))


def mv_wrapped(pred: str, gold: str, pred_full: bool, gold_full: bool) -> bool:
    """math-verify with bare answers wrapped in $...$ (its best use; needs the answer/full labels)."""
    g = parse(gold if gold_full else f"${gold}$") or parse(gold)
    p = parse(pred if pred_full else f"${pred}$") or parse(pred)
    return bool(verify(g, p))


def scored_cases(data: Path) -> list[dict]:
    rows = [json.loads(line) for line in open(data / "verify-cases" / "cases.jsonl", encoding="utf-8")]
    return [r for r in rows if not (r["ambiguous"] or r["needs_context"])]


def ours_on(rows: list[dict]) -> dict:
    """This process's ``check`` on labelled cases: FP/FN case ids and cases/s."""
    t = time.perf_counter()
    preds = [check(r["pred"], r["gold"], timeout=5.0).correct is True for r in rows]
    seconds = time.perf_counter() - t
    return {
        "agree": sum(p == r["equal"] for p, r in zip(preds, rows)),
        "fp": [r["id"] for p, r in zip(preds, rows) if p and not r["equal"]],
        "fn": [r["id"] for p, r in zip(preds, rows) if not p and r["equal"]],
        "rate": len(rows) / seconds,
    }


def bench_accuracy(data: Path, before: dict) -> tuple[list[str], dict]:
    """Agreement with the audited labels on the scored cases: this tree, the baseline, and math-verify."""
    rows = scored_cases(data)
    stats = {"mathforge (this tree)": ours_on(rows), f"mathforge (baseline {before['rev']})": before["public"]}
    for name, fn in (("math-verify (plain)", lambda r: mv_plain(r["pred"], r["gold"])),
                     ("math-verify (wrapped)", lambda r: mv_wrapped(r["pred"], r["gold"], r["pred_type"] == "full",
                                                                  r["gold_type"] == "full"))):
        t = time.perf_counter()
        preds = [fn(r) for r in rows]
        seconds = time.perf_counter() - t
        stats[name] = {"agree": sum(p == r["equal"] for p, r in zip(preds, rows)),
                       "fp": [r["id"] for p, r in zip(preds, rows) if p and not r["equal"]],
                       "fn": [r["id"] for p, r in zip(preds, rows) if not p and r["equal"]],
                       "rate": len(rows) / seconds}
    lines = [
        f"Scored cases: {len(rows)} (ambiguous / needs_context skipped).",
        "",
        "| system | agreement | false positives | false negatives | cases/s |",
        "|---|---|---|---|---|",
    ]
    for name, st in stats.items():
        lines.append(f"| {name} | {st['agree']}/{len(rows)} = {st['agree'] / len(rows):.1%} | {len(st['fp'])} | "
                     f"{len(st['fn'])} | {st['rate']:.0f} |")
    ours = stats["mathforge (this tree)"]
    lines += ["", f"mathforge false positives (case ids): {ours['fp']} (baseline: {before['public']['fp']})",
              f"mathforge false negatives (case ids): {ours['fn']} (baseline: {before['public']['fn']})"]
    return lines, stats


def hard_by_class() -> dict[str, dict]:
    """FP/FN per class of the held-out hard cases (tests/fixtures/verify/hard_cases.jsonl)."""
    rows = [json.loads(line) for line in open(HARD, encoding="utf-8")]
    out: dict[str, dict] = defaultdict(lambda: {"pos": 0, "neg": 0, "fp": [], "fn": []})
    for r in rows:
        c = out[r["class"]]
        c["pos" if r["equal"] else "neg"] += 1
        said = check(r["pred"], r["gold"], timeout=5.0).correct is True
        if said and not r["equal"]:
            c["fp"].append(r["id"])
        if not said and r["equal"]:
            c["fn"].append(r["id"])
    return dict(out)


def bench_hard(before: dict) -> tuple[list[str], dict]:
    after = hard_by_class()
    lines = [
        f"`tests/fixtures/verify/hard_cases.jsonl`: {sum(c['pos'] + c['neg'] for c in after.values())} cases written "
        "for issue 11 (not taken from the public set), positive and negative in each class.",
        "",
        "| class | equal / not equal | baseline FP | baseline FN | this tree FP | this tree FN |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in after.items():
        b = before["hard"].get(name, {"fp": [], "fn": []})
        lines.append(f"| {name} | {c['pos']} / {c['neg']} | {len(b['fp'])} | {len(b['fn'])} | {len(c['fp'])} | "
                     f"{len(c['fn'])} |")
    tot = lambda d, k: sum(len(c[k]) for c in d.values())  # noqa: E731
    lines.append(f"| **all** | | {tot(before['hard'], 'fp')} | {tot(before['hard'], 'fn')} | {tot(after, 'fp')} | "
                 f"{tot(after, 'fn')} |")
    wrong = [i for c in after.values() for i in c["fp"] + c["fn"]]
    lines += ["", f"Cases this tree still gets wrong: {wrong or 'none'}."]
    return lines, after


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


def gsm8k_ours(data: Path, n: int) -> dict:
    """``check`` over the GSM8K workload in this process: cases/s, FP and FN."""
    pairs = gsm8k_pairs(data, n)
    t = time.perf_counter()
    ours = [check(text, gold).correct for text, gold, _ in pairs]
    seconds = time.perf_counter() - t
    return {"n": len(pairs), "rate": len(pairs) / seconds,
            "fp": sum(1 for v, (_, _, lab) in zip(ours, pairs) if v and not lab),
            "fn": sum(1 for v, (_, _, lab) in zip(ours, pairs) if not v and lab)}


def bench_gsm8k(data: Path, n: int, mv_n: int, before: dict, base: "Baseline", rounds: int = 3) -> tuple[list[str], dict]:
    """Throughput and errors of check() in one process (this tree and the baseline, interleaved) vs math-verify,
    and verify_rows over the batch."""
    pairs = gsm8k_pairs(data, n)
    b, ours = gsm8k_interleaved(base, data, n, rounds)
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
    mv_rate = len(sub) / mv_s
    lines = [
        f"{len(pairs)} pairs from GSM8K test solutions (`####`, \"The answer is\", `\\boxed{{}}` styles; "
        f"{sum(not p[2] for p in pairs)} with a perturbed gold).",
        "",
        "| system | cases | false positives | false negatives | cases/s |",
        "|---|---|---|---|---|",
        f"| mathforge `check`, this tree (one process) | {ours['n']} | {ours['fp']} | {ours['fn']} | {ours['rate']:,.0f} |",
        f"| mathforge `check`, baseline {before['rev']} (one process) | {b['n']} | {b['fp']} | {b['fn']} | "
        f"{b['rate']:,.0f} |",
        f"| mathforge `verify_rows` (batch) | {len(pairs)} | {batch_err} (errors, FP+FN) | | {len(pairs) / batch_s:,.0f} |",
        f"| math-verify parse+verify | {len(sub)} (first) | {mv_fp} | {mv_fn} | {mv_rate:,.0f} |",
        "",
        f"This tree vs the baseline: **{ours['rate'] / b['rate']:.2f}x** the cases/s (best of {rounds} rounds each, "
        "alternating a baseline child process and this process on the same pairs). "
        f"Check vs math-verify, one process: **{ours['rate'] / mv_rate:.0f}x**.",
    ]
    return lines, {"fp": ours["fp"], "fn": ours["fn"], "ratio": ours["rate"] / mv_rate}


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
    """Each pathological input must return within the time limit + 1 s (this tree only)."""
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


def measure(data: Path, n: int, what: str) -> dict:
    """What a baseline child reports: ``all`` (public cases after a warm-up pass, hard classes) or ``gsm8k``."""
    import mathforge

    if what == "gsm8k":
        return {"gsm8k": gsm8k_ours(data, n), "module": mathforge.__file__}
    check("1", "\\sqrt{1}")
    rows = scored_cases(data)
    ours_on(rows)  # warm-up: ANTLR's parser caches are per process (workers and this one alike)
    return {"public": ours_on(rows), "hard": hard_by_class(), "module": mathforge.__file__}


class Baseline:
    """``rev``'s src/ in a temporary folder (git archive); ``measure`` runs there in a child process."""

    def __init__(self, rev: str, data: Path):
        self.repo, self.data = ROOT.parent, data
        self.tmp = tempfile.TemporaryDirectory(prefix="verify-baseline-")
        archive = Path(self.tmp.name) / "src.tar"
        subprocess.run(["git", "-C", str(self.repo), "archive", "-o", str(archive), rev, "src"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(self.tmp.name, filter="data")
        short = subprocess.run(["git", "-C", str(self.repo), "rev-parse", "--short", rev], capture_output=True, text=True)
        self.rev = short.stdout.strip() or rev

    def measure(self, n: int, what: str) -> dict:
        out = Path(self.tmp.name) / "out.json"
        env = {**os.environ, "PYTHONPATH": str(Path(self.tmp.name) / "src")}
        cmd = [sys.executable, __file__, "--data", str(self.data), "--child", str(out), "--n", str(n), "--what", what]
        subprocess.run(cmd, env=env, check=True, cwd=self.tmp.name)
        result = json.loads(out.read_text())
        if not result["module"].startswith(self.tmp.name):  # the child must have measured the baseline
            raise SystemExit(f"baseline child imported {result['module']}, not the archive in {self.tmp.name}")
        return result


def gsm8k_interleaved(base: Baseline, data: Path, n: int, rounds: int) -> tuple[dict, dict]:
    """The GSM8K workload for the baseline (a fresh child each round) and this tree, alternating round by round;
    the best rate of each is kept, so a burst of load from other users does not decide the ratio."""
    before, after = [], []
    for _ in range(rounds):
        before.append(base.measure(n, "gsm8k")["gsm8k"])
        after.append(gsm8k_ours(data, n))
    return max(before, key=lambda r: r["rate"]), max(after, key=lambda r: r["rate"])


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"Model name:\s*(.+)", out)
    return m.group(1).strip() if m else platform.processor() or "unknown CPU"


def sandbox_block(path: Path) -> str | None:
    """The sandbox section of an existing result file, verbatim (bench/sandbox.py owns it)."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def main() -> None:
    ap = argparse.ArgumentParser()
    shared = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), None)
    ap.add_argument("--data", type=Path, default=shared, help="the shared data folder (found above the repo)")
    ap.add_argument("--quick", action="store_true", help="1,000 GSM8K pairs instead of 10,000")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "verify.md")
    ap.add_argument("--baseline", default=BASELINE, help="git revision whose verifier is measured as 'before'")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (1000 if args.quick else 10_000)
    if args.child:
        args.child.write_text(json.dumps(measure(args.data, n, args.what)))
        return
    load = [os.getloadavg()[0]]
    base = Baseline(args.baseline, args.data)
    before = {**base.measure(n, "all"), "rev": base.rev}
    load.append(os.getloadavg()[0])
    check("1", "\\sqrt{1}")  # start the worker pool before timing anything
    ours_on(scored_cases(args.data))  # warm-up pass, as in the child
    sections = []
    acc, _ = bench_accuracy(args.data, before)
    sections.append(("1. Accuracy on audited equivalence cases", acc))
    hard, _ = bench_hard(before)
    sections.append(("2. Held-out hard cases by class (issue 11)", hard))
    load.append(os.getloadavg()[0])
    gsm, _ = bench_gsm8k(args.data, n, 1000, before, base)
    sections.append(("3. GSM8K workload", gsm))
    path, _ = bench_pathological(limit=3.0, mv_cap=20.0)
    sections.append(("4. Pathological inputs", path))
    load.append(os.getloadavg()[0])
    header = [
        "# Verify benchmark",
        "",
        f"`python bench/verify.py{' --quick' if args.quick else ''}` on {cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.platform()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"Load average (1 min) during the run: {min(load):.1f}–{max(load):.1f}; the machine is shared with other "
        "engineers, so absolute rates are noisy: compare this tree and the baseline, measured one after the other "
        f"in the same run. Baseline: `{before['rev']}` (main before the verifier fixes of issue 11).",
        "",
    ]
    body = header + [line for title, lines in sections for line in (f"## {title}", "", *lines, "")]
    block = sandbox_block(args.out)
    text = "\n".join(body) + (f"\n{block}\n" if block else "")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
