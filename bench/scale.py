"""Scale benchmark: load → verify → curate → export at 100k and 900k NuminaMath-1.5-shaped problems, and generate
against the local fake OpenAI server at k=1 with 20k and 200k requests, for the code in this tree and a baseline tree.

    nice -n 10 python bench/scale.py [--sizes 100000 900000] [--gen 20000 200000] [--systems new baseline]
        [--baseline /work/wt/_baseline/src] [--new-src SRC] [--cap-mib 4096] [--instant]
        [--data-dir /tmp/mathforge-scale] [--save RAW.json] [--merge OTHER.json ...] [--export-only]

The baseline is the old code's ``src`` (e.g. ``git archive 7e51387 src | tar -x -C /tmp/base``); ``--new-src`` a
copy of this tree's ``src`` taken before the run, so that edits made meanwhile are not measured. ``--instant``
makes the fake server answer at once with 1-3 token completions (the client's memory is what is measured).
``--save``/``--merge`` let parts measured in parallel processes be reported in one file. ``--export-only`` measures
export alone at ``--sizes``, on the first N problems' reference solutions registered (untimed) as verify's output,
4 in 9 of them marked correct (the share the full pipeline kept at 900k).

Data: Parquet files in NuminaMath-1.5's schema (problem, solution, answer, problem_type, question_type,
problem_is_valid, solution_is_valid, source, synthetic), written in 10,000-row groups. Each row is built from MATH
train (``--math``): a problem with its numbers redrawn and a sentence of another problem in front, and a solution of
~1.6 kB (a paragraph of another solution, then the problem's own solution ending in its ``\\boxed{}``), so the answer
column agrees with the reference solution; 5% are proofs and 8% multiple choice, as in the real dataset.

Every step runs as ``mathforge run RECIPE --only STEP`` in a fresh process; its peak RSS is read with ``wait4`` and
the process is killed when its RSS passes ``--cap-mib`` (reported as "> cap"); CPU time is the step's user + system
time including the worker processes it waited for, and the load average is sampled every ~5 s while it runs. Verification runs on the reference
solutions as samples: the harness writes a samples table (text = solution) between load and verify, untimed.
Writes bench/results/scale.md (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The data shared with the project: ../shared/data from its root (from a worktree one level deeper, ../../shared/data)
SHARED_DATA = next((d for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if d.is_dir()),
                   ROOT.parent / "shared" / "data")
SERVER = ROOT / "tests" / "fake_openai_server.py"
SOURCES = ["olympiads", "cn_k12", "aops_forum", "amc_aime", "number_theory", "inequalities", "cn_contest", "orca_math"]
BENCHMARKS = [("gsm8k", "gsm8k", "test"), ("math", "math", "test"), ("math500", "math500", "test"),
              ("svamp", "svamp/SVAMP.json", None), ("mathqa", "mathqa", "test")]
_NUM = re.compile(r"(?<![\\\w])\d+")
_BOXED = re.compile(r"\\boxed\{")


# -- data ---------------------------------------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def make_data(path: Path, n: int, math_train: Path, seed: int = 0) -> None:
    """Write ``n`` NuminaMath-1.5-shaped rows to ``path`` in 10k-row groups (the generator itself stays small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [json.loads(line) for line in math_train.open(encoding="utf-8")]
    base = [b for b in base if last_boxed(b["solution"])]
    rng = random.Random(seed)
    schema = pa.schema([("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
                        ("problem_type", pa.string()), ("question_type", pa.string()),
                        ("problem_is_valid", pa.string()), ("solution_is_valid", pa.string()),
                        ("source", pa.string()), ("synthetic", pa.bool_())])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, n, 10_000):
            rows = [_row(base, rng) for _ in range(min(10_000, n - start))]
            writer.write_table(pa.Table.from_pylist(rows, schema))
    tmp.replace(path)


def _row(base: list[dict], rng: random.Random) -> dict:
    a, b, c = rng.choice(base), rng.choice(base), rng.choice(base)
    lead = re.split(r"(?<=[.?!])\s", b["problem"], maxsplit=1)[0]
    problem = lead + " " + _NUM.sub(lambda m: str(rng.randint(2, 999)), a["problem"])
    solution = c["solution"].split("\n\n")[0] + "\n\n" + b["solution"].rsplit("\\boxed", 1)[0] + "\n\n" + a["solution"]
    answer, qtype = last_boxed(a["solution"]), "math-word-problem"
    r = rng.random()
    if r < 0.05:
        answer, qtype = "proof", "proof"
    elif r < 0.13:
        qtype = "MCQ"
    return {"problem": problem, "solution": solution, "answer": answer, "problem_type": a["type"],
            "question_type": qtype, "problem_is_valid": "Yes", "solution_is_valid": "Yes",
            "source": rng.choice(SOURCES), "synthetic": rng.random() < 0.1}


# -- measured processes -----------------------------------------------------------------------------------------
def measure(cmd: list[str], env: dict[str, str], cap_mib: int, log: Path) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds (user + system, with the pool workers it waited for), peak RSS
    (wait4's ru_maxrss), the peak RSS in each tenth of the run (sampled every 0.2 s: a memory that grows with the
    work rises from tenth to tenth, a bounded one levels off), the mean 1-minute load average while it ran, and
    whether it was killed at the RSS cap."""
    t0 = time.perf_counter()
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    capped, peak_seen, loads, tick, samples = False, 0, [os.getloadavg()[0]], 0, []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_mib(proc.pid)
        peak_seen = max(peak_seen, rss)
        samples.append((time.perf_counter() - t0, rss))
        if rss > cap_mib:
            capped = True
            os.killpg(proc.pid, 9)
        tick += 1
        if tick % 25 == 0:
            loads.append(os.getloadavg()[0])
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    tenths = [max((m for t, m in samples if i * wall / 10 <= t < (i + 1) * wall / 10), default=0) for i in range(10)]
    return {"seconds": round(wall, 1), "tenths_mib": tenths, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_mib": round(max(usage.ru_maxrss / 1024, peak_seen)), "load": round(sum(loads) / len(loads), 1),
            "capped": capped, "rc": proc.returncode}


def _rss_mib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def write_recipe(run_dir: Path, data: Path, limit: int | None, bench_data: Path, url: str | None,
                 window: int | None = None, only: tuple[str, ...] | None = None) -> Path:
    import yaml

    refs = [{"name": n, "path": str(bench_data / p), "split": s} for n, p, s in BENCHMARKS]
    recipe = {
        "name": "scale",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url or "http://127.0.0.1:9/v1",
                              "api_key_env": "BENCH_KEY", "max_concurrency": 256}},
        "stages": [{"load": {"dataset": "numinamath", "path": str(data), "limit": limit}},
                   {"generate": {"k": 1, "max_tokens": 64, **({"window": window} if window else {})}},
                   {"verify": {}},
                   {"curate": {"decontam": {"benchmarks": refs}}},
                   {"export": {}}],
    }
    if only:  # a recipe of these stages alone (export-only: no load whose problems export would look for)
        recipe["stages"] = [st for st in recipe["stages"] if next(iter(st)) in only]
    path = run_dir / "scale.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def reference_samples(src: Path, run_dir: Path) -> None:
    """The harness's own step (untimed): the problems' reference solutions as the run's samples table
    (``generate.parquet``, registered in state.json), identical for both systems."""
    code = f"""
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
sys.path.insert(0, {str(src)!r})
from mathforge.records import SAMPLE_SCHEMA
run = Path({str(run_dir)!r})
probs = run / "problems.parquet"  # one file (baseline) or a shard directory (new)
files = sorted(probs.glob("part-*.parquet")) if probs.is_dir() else [probs]
out = run / "generate.parquet"
with pq.ParquetWriter(out, SAMPLE_SCHEMA) as w:
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(10_000):
            rows = b.to_pylist()
            w.write_table(pa.Table.from_pylist([dict(
                id=r["id"] + "#reference#0", problem_id=r["id"], question=r["question"], gold=r["answer"],
                teacher="reference", model="reference", sample_index=0, prompt_key="cot-boxed", request_key="",
                text=r["solution"] or "", finish_reason="stop", tokens_in=0, tokens_out=0, round=0)
                for r in rows], SAMPLE_SCHEMA))
try:  # a run directory with lineage: the table is the output of the recipe's generate stage
    from mathforge.pipeline.state import RunState
except ImportError:  # the baseline: state.json names the latest table of each kind
    state = run / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {{}}
    data.setdefault("tables", {{}})["samples"] = "generate.parquet"
    state.write_text(json.dumps(data))
else:
    st = RunState(run)
    st.record("generate", "generate", {{}}, {{"samples": ("samples", "generate.parquet", pq.read_metadata(out).num_rows)}})
    st.save()
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def run_pipeline(system: str, src: Path, data: Path, n: int, args, work: Path) -> dict:
    run_dir = work / f"{system}-{n}"
    run_dir.mkdir(parents=True)
    recipe = write_recipe(run_dir, data, n, args.bench_data, None)
    env = _env(src)
    log = work / f"{system}-{n}.log"
    out: dict = {}
    for step in ("load", "verify", "curate", "export"):
        if step == "verify":
            reference_samples(src, run_dir)
        res = measure([sys.executable, "-m", "mathforge", "run", str(recipe), "-o", str(run_dir), "--only", step],
                      env, args.cap_mib, log)
        out[step] = res
        print(f"{system:9s} n={n:>7,} {step:7s} {res}", flush=True)
        if res["rc"]:
            break
    out["counts"] = _counts(run_dir)
    return out


def _counts(run_dir: Path) -> dict:
    summary = run_dir / "summary.json"
    if not summary.exists():
        return {}
    stages = json.loads(summary.read_text()).get("stages", {})
    return {k: {m: v for m, v in d.items() if isinstance(v, (int, float))} for k, d in stages.items()}


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "BENCH_KEY": "sk-bench-not-a-real-key", "MATHFORGE_PROGRESS": "0"}


class Server:
    """tests/fake_openai_server.py in its own process, answering fast so that the client's memory is what grows."""

    def __init__(self, instant: bool = False) -> None:
        d = tempfile.mkdtemp()
        port_file = Path(d) / "port"
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--port-file", str(port_file), "--lifetime", "3600"])
        for _ in range(400):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{port_file.read_text().strip()}"
        self.url = self.base + "/v1"
        cfg = ({"base_latency": 0.0, "per_token": 0.0, "min_completion": 1, "max_completion": 3} if instant else
               {"base_latency": 0.005, "per_token": 0.0, "min_completion": 20, "max_completion": 60})
        req = urllib.request.Request(self.base + "/admin/config", json.dumps(cfg).encode(),
                                     {"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def accepted_samples(src: Path, data: Path, n: int, run_dir: Path) -> None:
    """The harness's own step for ``--export-only`` (untimed): the first ``n`` problems' reference solutions as
    verified samples in shards (as a verify or curate stage writes them), registered as the verify stage's output,
    so that export alone can be measured at a size whose verify and curate take an hour. 4 in 9 are marked correct
    (what export keeps): the full pipeline at 900k kept 400,969 (44.6%)."""
    code = f"""
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
sys.path.insert(0, {str(src)!r})
from mathforge.pipeline.state import RunState
from mathforge.records import SAMPLE_SCHEMA
from mathforge.store.shards import ShardWriter
run, left, i = Path({str(run_dir)!r}), {n}, 0
w = ShardWriter(run / "verify.parquet", SAMPLE_SCHEMA)
for b in pq.ParquetFile({str(data)!r}).iter_batches(10_000, columns=["problem", "solution", "answer"]):
    rows = b.to_pylist()[:left]
    left -= len(rows)
    w.write(pa.Table.from_pylist([dict(
        id=f"numinamath/{{i + j}}#reference#0", problem_id=f"numinamath/{{i + j}}", question=r["problem"],
        gold=r["answer"], teacher="reference", model="reference", sample_index=0, prompt_key="cot-boxed",
        request_key="", text=r["solution"], finish_reason="stop", tokens_in=0, tokens_out=0, round=0,
        correct=(i + j) % 9 < 4, method="reference") for j, r in enumerate(rows)], SAMPLE_SCHEMA))
    i += len(rows)
    if not left:
        break
w.commit()
st = RunState(run)
st.record("verify", "verify", {{}}, {{"samples": ("samples", "verify.parquet", i)}})
st.save()
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def run_export(system: str, src: Path, data: Path, n: int, args, work: Path) -> dict:
    """Export alone on ``n`` accepted samples (``accepted_samples``), in a fresh process."""
    run_dir = work / f"{system}-export-{n}"
    run_dir.mkdir(parents=True)
    recipe = write_recipe(run_dir, data, n, args.bench_data, None, only=("verify", "export"))
    accepted_samples(src, data, n, run_dir)
    res = measure([sys.executable, "-m", "mathforge", "run", str(recipe), "-o", str(run_dir), "--only", "export"],
                  _env(src), args.cap_mib, work / f"{system}-export-{n}.log")
    res["counts"] = _counts(run_dir).get("export", {})
    print(f"{system:9s} export n={n:>7,} {res}", flush=True)
    return res


def run_generate(system: str, src: Path, data: Path, n: int, args, work: Path, server: Server) -> dict:
    run_dir = work / f"{system}-gen-{n}"
    run_dir.mkdir(parents=True)
    window = args.window if system == "new" else None  # the baseline has no windows (and rejects the key)
    recipe = write_recipe(run_dir, data, n, args.bench_data, server.url, window)
    env, log = _env(src), work / f"{system}-gen-{n}.log"
    cmd = [sys.executable, "-m", "mathforge", "run", str(recipe), "-o", str(run_dir), "--only"]
    load = measure(cmd + ["load"], env, args.cap_mib, log)
    res = measure(cmd + ["generate"], env, args.cap_mib, log)
    res["counts"] = _counts(run_dir).get("generate", {})
    print(f"{system:9s} generate n={n:>7,} {res} (load {load})", flush=True)
    return res


# -- report -----------------------------------------------------------------------------------------------------
def _cell(r: dict | None) -> str:
    if not r:
        return "-"
    if r["capped"]:
        return f"> {r['peak_mib']:,} MiB: killed at the cap after {r['seconds']:.0f} s ({r.get('cpu_s', 0):.0f} s CPU)"
    if r["rc"]:
        return f"failed (rc {r['rc']})"
    return f"**{r['peak_mib']:,} MiB**, {r['seconds']:.0f} s wall, {r.get('cpu_s', 0):.0f} s CPU, load {r.get('load', 0):.1f}"


def report(results: dict, args, load_avg: list[tuple[float, float, float]], started: str) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    lines = ["# Scale benchmark: NuminaMath-1.5-shaped data, 100k-900k problems", "",
             f"`python bench/scale.py` started {started}. CPU: {cpu}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}. The machine is shared with other engineers: load average (1 min) was "
             + ", ".join(f"{a[0]:.1f}" for a in load_avg) + " between the steps, so wall times are noisy; CPU time "
             "(user + system of the step and the workers it waited for) is the steadier measure of work. Both "
             "systems ran on the same files, one step per fresh process.",
             "", f"Cell = peak RSS of the step's process (ru_maxrss), wall time, CPU time, mean 1-minute load "
             f"average during the step. Steps whose RSS passed {args.cap_mib:,} MiB were killed.", ""]
    lines += ["## load → verify → curate → export", "",
              "| system | problems | load | verify | curate | export | peak of all steps |", "|---|---:|---|---|---|---|---:|"]
    for (system, n), r in sorted(results["pipeline"].items(), key=lambda x: (x[0][1], x[0][0])):
        steps = [r.get(s) for s in ("load", "verify", "curate", "export")]
        peak = max((s["peak_mib"] for s in steps if s), default=0)
        capped = any(s and s["capped"] for s in steps)
        lines.append(f"| {system} | {n:,} | " + " | ".join(_cell(s) for s in steps)
                     + f" | {'> ' if capped else ''}{peak:,} MiB |")
    server = "answering at once with 1-3 token completions" if args.instant else "at 5 ms latency"
    lines += ["", f"## generate (k=1, fake OpenAI server {server})", "",
              "| system | requests | generate step | peak RSS in each tenth of the step (MiB) | samples |",
              "|---|---:|---|---|---:|"]
    for (system, n), r in sorted(results["generate"].items(), key=lambda x: (x[0][1], x[0][0])):
        tenths = " ".join(str(m) for m in r.get("tenths_mib", [])) or "-"
        lines.append(f"| {system} | {n:,} | {_cell(r)} | {tenths} | {r.get('counts', {}).get('samples', '-')} |")
    lines += ["", "Raw results:", "", "```json", json.dumps({f"{k[0]} {k[1]}": v for part in results.values()
                                                              for k, v in part.items()}, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 900_000])
    ap.add_argument("--gen", type=int, nargs="*", default=[20_000, 200_000])
    ap.add_argument("--systems", nargs="+", default=["baseline", "new"])
    ap.add_argument("--baseline", type=Path, default=Path("/work/wt/_baseline/src"))
    ap.add_argument("--cap-mib", type=int, default=4096)
    ap.add_argument("--window", type=int, default=None, help="generate.window for the new system (default: its own)")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mathforge-scale")
    ap.add_argument("--math", type=Path, default=SHARED_DATA / "math" / "train.jsonl")
    ap.add_argument("--bench-data", type=Path, default=SHARED_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.md")
    ap.add_argument("--new-src", type=Path, default=ROOT / "src",
                    help="sources of the new system (a copy keeps edits made meanwhile out of the measurement)")
    ap.add_argument("--export-only", action="store_true",
                    help="pipeline sizes: export alone, on the problems' reference solutions (4 in 9 correct)")
    ap.add_argument("--instant", action="store_true", help="the fake server answers at once with 1-3 tokens")
    ap.add_argument("--save", type=Path, help="also write the raw results to this JSON file")
    ap.add_argument("--merge", type=Path, nargs="*", default=[], help="raw results of other runs to report with these")
    args = ap.parse_args()
    srcs = {"new": args.new_src, "baseline": args.baseline}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    biggest = max([900_000, *args.sizes, *args.gen])  # one file; smaller sizes read its first rows (limit)
    data = args.data_dir / f"numina-{biggest}.parquet"
    if not data.exists():
        t0 = time.perf_counter()
        make_data(data, biggest, args.math)
        print(f"wrote {data} ({data.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.data_dir))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict = {"pipeline": {}, "generate": {}}
    load_avg = [os.getloadavg()]
    for n in args.sizes:
        for system in args.systems:
            if args.export_only:
                results["pipeline"][(system, n)] = {"export": run_export(system, srcs[system], data, n, args, work)}
            else:
                results["pipeline"][(system, n)] = run_pipeline(system, srcs[system], data, n, args, work)
            load_avg.append(os.getloadavg())
    if args.gen:
        server = Server(args.instant)
        try:
            for n in args.gen:
                for system in args.systems:
                    label = f"new, window {args.window:,}" if args.window and system == "new" else system
                    results["generate"][(label, n)] = run_generate(system, srcs[system], data, n, args, work, server)
                    load_avg.append(os.getloadavg())
        finally:
            server.close()
    if args.save:
        args.save.write_text(json.dumps({part: [[*k, v] for k, v in r.items()] for part, r in results.items()}))
    for extra in args.merge:
        for part, items in json.loads(extra.read_text()).items():
            results[part].update({(system, n): v for system, n, v in items})
    text = report(results, args, load_avg, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"work directory (delete when done): {work}")


if __name__ == "__main__":
    main()
