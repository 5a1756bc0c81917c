"""Time the first ten minutes: `mathforge run quickstart` from an empty run directory, then again from its ledger.

Reports wall time, generated tokens and tokens/s, the CPU model, the load average, and what the run's token count
means on the slowest machine the quickstart is sized for: an older 2-core AMD EPYC without AVX-512 that generated
46 tokens/s with main's code while idle (issue 12). `--avx2` runs the quickstart with torch, MKL, oneDNN and fbgemm
held to AVX2 (what such a CPU has), so the code paths are the slow machine's; the clock speed and cache are not.
Writes bench/results/quickstart.md. Usage: python bench/quickstart.py [--avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mathforge.summary import funnel_line

SLOW_TOKENS_PER_S = 46.0  # main's code on the idle slow machine (static batch of 50, float32)
# The same code on an idle Zen 4 EPYC of this project's kind (bench/results/quickstart.md, session 1: 313 s, 135 tok/s):
# 135 / 46 = 2.9x is how much slower the slow machine ran the same work, used to scale a whole idle run.
FAST_TOKENS_PER_S = 135.0
TARGET_GEN_S, TARGET_TOTAL_S = 180, 300  # generation; and with install (2 min measured in the issue)
INSTALL_S = 120
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}


def run(run_dir: Path, env_extra: dict) -> tuple[float, float, dict, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_extra)
    cpu0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mathforge", "run", "quickstart", "--run-dir", str(run_dir)],
                          env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return wall, _child_cpu() - cpu0, json.loads((run_dir / "summary.json").read_text()), proc.stderr + proc.stdout


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--avx2", action="store_true", help="hold torch/MKL/oneDNN/fbgemm to AVX2 (the slow machine's ISA)")
    args = ap.parse_args()
    env_extra = AVX2 if args.avx2 else {}
    cpu_model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    cpu_model = cpu_model.split(":", 1)[-1].strip() or "unknown"
    avx512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    tmp = Path(tempfile.mkdtemp(prefix="mf-quickstart-"))
    load0 = os.getloadavg()[0]
    try:
        first_s, first_cpu, first, log = run(tmp / "run", env_extra)
        load1 = os.getloadavg()[0]
        again_s, _, again, _ = run(tmp / "run", env_extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gen = first["stages"]["generate"]
    tokens = first["tokens_out"]
    slow_gen = tokens / SLOW_TOKENS_PER_S
    slow, gen_s = FAST_TOKENS_PER_S / SLOW_TOKENS_PER_S, gen.get("gen_seconds", 0)
    plain_lines = [line for line in log.splitlines() if line.startswith("generate ")]
    rows = [("first run (empty run directory)", first_s, first), ("rerun (every response from the ledger)", again_s,
                                                                   again)]
    lines = [
        "# Quickstart: `mathforge run quickstart`",
        "",
        f"CPU: **{cpu_model}** ({os.cpu_count()} cores, AVX-512 {'present' if avx512 else 'absent'}"
        f"{'; torch, MKL, oneDNN and fbgemm held to AVX2 for this run' if args.avx2 else ''}). "
        f"Load average {load0:.1f} at the start, {load1:.1f} after the first run: the machine is shared with other "
        "engineers' jobs, so the wall times here are noisy and pessimistic; the token count is not.",
        "",
        "Recipe: 12 bundled arithmetic word problems x 4 samples, SmolLM2-135M-Instruct (fp16 linear weights, "
        "continuous batching), max_tokens 128, then verify → curate (filters, dedup, arithmetic step check) → export.",
        "",
        "| run | wall s | CPU s | requests sent | cached | samples | kept | tokens out | gen s | gen tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {rows[0][0]} | {first_s:.1f} | {first_cpu:.1f} | {first['requests_sent']} | {first['requests_cached']} | "
        f"{first['samples']} | {first['accepted']} | {tokens:,} | {gen.get('gen_seconds', 0):.1f} | "
        f"{first['tokens_per_s'] or '-'} |",
        f"| {rows[1][0]} | {again_s:.1f} | - | {again['requests_sent']} | {again['requests_cached']} | "
        f"{again['samples']} | {again['accepted']} | {again['tokens_out']:,} | - | - |",
        "",
        f"Funnel: {funnel_line(first['funnel']) if first.get('funnel') else '-'}",
        "",
        "## The slow machine",
        "",
        f"The quickstart generates {tokens:,} tokens. At the {SLOW_TOKENS_PER_S:.0f} tokens/s that main's code "
        f"reached on the issue's idle slow 2-core EPYC (no AVX-512), that is {slow_gen:.0f} s of generation "
        f"(target < {TARGET_GEN_S} s: {'met' if slow_gen < TARGET_GEN_S else 'MISSED'}, "
        f"{TARGET_GEN_S / slow_gen:.1f}x margin before this branch's faster generation is counted), and "
        f"{slow_gen + INSTALL_S:.0f} s with the issue's 2-minute install (target < {TARGET_TOTAL_S} s).",
        "",
        f"Scaled instead by how much slower the slow machine ran the same code ({FAST_TOKENS_PER_S:.0f} / "
        f"{SLOW_TOKENS_PER_S:.0f} = {slow:.1f}x; valid when this run's load average was near 0): generation "
        f"{gen_s * slow:.0f} s (target < {TARGET_GEN_S} s: {'met' if gen_s * slow < TARGET_GEN_S else 'MISSED'}), "
        f"the whole run {first_s * slow:.0f} s, {first_s * slow + INSTALL_S:.0f} s with the install (target < "
        f"{TARGET_TOTAL_S} s: {'met' if first_s * slow + INSTALL_S < TARGET_TOTAL_S else 'MISSED'}).",
        "",
        f"Progress in a log (stderr not a terminal): {len(plain_lines)} plain `generate` line(s), e.g. "
        f"`{plain_lines[-1] if plain_lines else '-'}`.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "quickstart.md"
    notes = ""
    if out.exists() and "\n## Notes" in out.read_text():
        notes = out.read_text()[out.read_text().index("\n## Notes"):]
    out.write_text(text + notes)


if __name__ == "__main__":
    main()
