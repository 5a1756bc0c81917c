"""Local generation, main's code against this branch's, side by side in one run (each arm in its own process).

Arms, run one after another and interleaved so that a change in the machine's load hits both sides:
- `main`: the local backend as it was (static batches, float32, all cores, OpenMP's default spinning waits),
  imported from a git commit's `src/` (default: the commit before continuous batching, 7e51387);
- `main+passive`: the same code with `OMP_WAIT_POLICY=PASSIVE` (what `import mathforge` now sets);
- `new`: this tree's defaults (continuous batching, fp16 linear weights, load-aware threads, passive waits);
- `new-int8`: `quantize: int8` (opt-in).
Then greedy (temperature 0) outputs of `none` / `fp16` / `int8` weights on the same prompts: identical texts, common
prefix, answers verified correct. Writes bench/results/local_backend.md.

Usage: python bench/local_backend.py [--prompts 50] [--max-tokens 256] [--ref 7e51387] [--no-greedy]
       [--arms main,new,main+passive,new-int8] [--greedy none,fp16,int8] [--arm-timeout MINUTES]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def arm(args: argparse.Namespace) -> None:
    """Child process: load, warm up, generate the prompts once; print one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mathforge.backends import GenRequest, SamplingParams
    from mathforge.backends.local import LocalBackend, LocalConfig
    from mathforge.datasets import load
    from mathforge.prompts import build_messages, get_prompt
    from mathforge.verify import check

    problems = list(load("gsm8k", path="bundled:gsm8k-train-50", limit=args.prompts))
    params = SamplingParams(temperature=args.temperature, top_p=0.95 if args.temperature else 1.0,
                            max_tokens=args.max_tokens, seed=0)
    reqs = [GenRequest(f"k{i}", build_messages(get_prompt("cot"), p), params, 0) for i, p in enumerate(problems)]
    extra = json.loads(args.config)
    backend = LocalBackend("smollm2", LocalConfig(model="smollm2", batch_size=args.prompts, **extra))
    t = time.perf_counter()
    backend.prepare()
    load_s = time.perf_counter() - t
    warm = [GenRequest("warm", reqs[0].messages, SamplingParams(max_tokens=4, seed=1), 0)]
    backend.generate(warm, Sink())  # first-call allocations, not timed
    sink = Sink()
    la0, cpu0, t = os.getloadavg()[0], _cpu(), time.perf_counter()
    backend.generate(reqs, sink)
    wall, cpu = time.perf_counter() - t, _cpu() - cpu0
    texts = [sink.done[r.key].text for r in reqs]
    correct = sum(bool(check(x, p.answer).correct) for x, p in zip(texts, problems))
    lengths = [sink.done[r.key].tokens_out for r in reqs]
    print(json.dumps({"wall": wall, "cpu": cpu, "tokens": sum(lengths), "lengths": lengths, "load": load_s,
                      "loadavg": [la0, os.getloadavg()[0]], "texts": texts, "correct": correct,
                      "threads": __import__("torch").get_num_threads()}))


class Sink:
    def __init__(self):
        self.done = {}

    def ok(self, r, c):
        self.done[r.key] = c

    def ok_many(self, items):
        for r, c in items:
            self.done[r.key] = c

    def fail(self, r, e, *, final):
        raise RuntimeError(e)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_arm(name: str, src: Path, env_extra: dict, config: dict, args, temperature: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(PYTHONPATH=str(src), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **env_extra)
    cmd = [sys.executable, __file__, "--arm", "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens),
           "--temperature", str(temperature), "--config", json.dumps(config)]
    print(f"[{time.strftime('%H:%M:%S')}] {name} …", file=sys.stderr, flush=True)
    la0, t0 = os.getloadavg()[0], time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                             timeout=args.arm_timeout * 60 if args.arm_timeout else None).stdout
    except subprocess.TimeoutExpired:  # recorded as a row that did not finish, not silently dropped
        wall = time.perf_counter() - t0
        print(f"  did not finish in {wall:.0f} s", file=sys.stderr, flush=True)
        return {"name": name, "unfinished": wall, "loadavg": [la0, os.getloadavg()[0]]}
    res = json.loads(out.strip().splitlines()[-1])
    res["name"] = name
    print(f"  {res['tokens']} tokens in {res['wall']:.1f} s = {res['tokens'] / res['wall']:.1f} tok/s "
          f"(load {res['loadavg']})", file=sys.stderr, flush=True)
    return res


def prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--ref", default="7e51387", help="main's commit to compare with")
    ap.add_argument("--no-greedy", action="store_true", help="skip the greedy accuracy check")
    ap.add_argument("--arms", default="main,new,main+passive,new-int8", help="comma-separated arms, in run order")
    ap.add_argument("--greedy", default="none,fp16,int8", help="weight formats of the greedy check (none first)")
    ap.add_argument("--arm-timeout", type=float, default=0, help="minutes an arm may run (0: no limit)")
    args = ap.parse_args()
    if args.arm:
        return arm(args)
    cpu_model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    cpu_model = cpu_model.split(":", 1)[-1].strip() or "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        old_src = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        old_src, new_src = old_src / "src", ROOT / "src"
        passive = {"OMP_WAIT_POLICY": "PASSIVE"}
        t0 = time.time()
        spec = {"main": (old_src, {}, {}), "main+passive": (old_src, passive, {}), "new": (new_src, {}, {}),
                "new-int8": (new_src, {}, {"quantize": "int8"})}
        runs = [run_arm(a, *spec[a], args, 0.7) for a in args.arms.split(",")]
        greedy = [] if args.no_greedy else [
            run_arm(f"greedy {q}", new_src, {}, {"quantize": q}, args, 0.0) for q in args.greedy.split(",")
        ]
        minutes = (time.time() - t0) / 60
    done = [r for r in runs if "unfinished" not in r]
    base_arm = next((r for r in done if r["name"].startswith("main")), done[0])  # the first of main's arms that finished
    base = base_arm["tokens"] / base_arm["wall"]
    lines = [
        "# Local backend: main's code vs this tree, side by side",
        "",
        f"CPU: **{cpu_model}**, {os.cpu_count()} cores. SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised), "
        f"{args.prompts} GSM8K train prompts (cot), temperature 0.7, top_p 0.95, max_tokens {args.max_tokens}, "
        f"batch {args.prompts}; each arm in its own process, one after another in one run ({minutes:.0f} min), "
        f"model load and a 4-token warm-up not timed. main = commit {args.ref}. The machine is shared with other "
        "engineers' jobs: the 1-minute load average at the start and end of each arm is listed, and absolute "
        "numbers are noisy; compare arms of the same run, and the CPU seconds per token.",
        "",
        f"| arm | threads | tokens | wall s | tokens/s | x {base_arm['name']} | CPU s | tokens per CPU s | correct | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if "unfinished" in r:
            lines.append(f"| {r['name']} | - | - | > {r['unfinished']:.0f} (stopped) | - | - | - | - | - | "
                         f"{r['loadavg'][0]:.1f} → {r['loadavg'][1]:.1f} |")
            continue
        tps = r["tokens"] / r["wall"]
        lines.append(f"| {r['name']} | {r['threads']} | {r['tokens']:,} | {r['wall']:.1f} | {tps:.1f} | "
                     f"{tps / base:.2f}x | {r['cpu']:.1f} | {r['tokens'] / r['cpu']:.1f} | {r['correct']} of {args.prompts} | "
                     f"{r['loadavg'][0]:.1f} → {r['loadavg'][1]:.1f} |")
    lengths = next(r for r in done if r["name"] == "new")["lengths"] if any(r["name"] == "new" for r in done) \
        else done[0]["lengths"]
    static_rows = len(lengths) * max(lengths)
    lines += [
        "",
        f"Padding: in the `new` arm the {len(lengths)} samples needed {sum(lengths):,} decode row-steps; one static "
        f"batch runs every row until the longest stops: {static_rows:,} row-steps, "
        f"{1 - sum(lengths) / static_rows:.0%} of them wasted. Refilling freed rows removes that waste.",
        "",
    ]
    if greedy:
        ref = greedy[0]
        lines += [
            "## Greedy outputs by weight format (accuracy check)",
            "",
            "Same prompts, temperature 0, continuous batching; compared with float32 weights (`none`).",
            "",
            "| weights | identical texts | mean common prefix (chars) | correct answers | tokens/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for g in greedy:
            same = sum(a == b for a, b in zip(g["texts"], ref["texts"]))
            pre = sum(prefix(a, b) for a, b in zip(g["texts"], ref["texts"])) / len(ref["texts"])
            lines.append(f"| {g['name'].split()[-1]} | {same} of {len(ref['texts'])} | {pre:.0f} | "
                         f"{g['correct']} | {g['tokens'] / g['wall']:.1f} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / "local_backend.md"
    out.parent.mkdir(exist_ok=True)
    # keep hand-written notes below the generated part (the slow-machine check, the continuous-batching API)
    notes = ""
    if out.exists() and "\n## Notes" in out.read_text():
        notes = out.read_text()[out.read_text().index("\n## Notes"):]
    out.write_text(text + notes)


if __name__ == "__main__":
    main()
