"""Training throughput on this machine: tokens/s and peak memory of LoRA vs full fine-tuning of SmolLM2-135M.

Each row runs in its own process (so peak RSS is its own) on GSM8K reference solutions from the bundled sample,
through the same `mathforge.train.sft.train` the CLI and recipes use. Writes bench/results/train.md.
Usage: python bench/train.py [--steps 20] [--batch 4] [--rows lora,lora-nockpt,full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS = {
    # name: (TrainConfig overrides, what the row shows)
    "lora": ({"method": "lora"}, "seed LoRA (r 64, alpha 128, all linear layers), gradient checkpointing on"),
    "lora-nockpt": ({"method": "lora", "gradient_checkpointing": False}, "same, gradient checkpointing off"),
    "full": ({"method": "full", "gradient_checkpointing": False}, "full fine-tuning (every weight), checkpointing off"),
}


def prepare(work: Path, problems: int) -> tuple[str, str]:
    """The model as a plain transformers directory and a JSONL of reference-solution chats."""
    from mathforge.datasets import load
    from mathforge.train.config import TrainConfig
    from mathforge.train.model import load_student
    from mathforge.export import ExportConfig, sft_rows
    from mathforge.train.reference import ReferenceSFTConfig, reference_samples

    model_dir = work / "smollm2"
    tok, model, _ = load_student(TrainConfig(model="smollm2", method="lora"), "cpu", "fp32")
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    samples, _ = reference_samples(list(load("gsm8k", path="bundled:gsm8k-train-50", limit=problems)),
                                   ReferenceSFTConfig())
    rows = sft_rows(samples, ExportConfig())
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(model_dir), str(data)


def run_row(name: str, model_dir: str, data: str, steps: int, batch: int, out: str, threads: int | None) -> dict:
    """One training run; its numbers as JSON on stdout (called in a child process)."""
    from mathforge.train.config import TrainConfig
    from mathforge.train.sft import train

    cfg = TrainConfig(model=model_dir, data=data, output_dir=out, max_steps=steps, batch_size=batch, grad_accum=1,
                      max_seq_length=512, logging_steps=1, save_steps=10_000, learning_rate=1e-5,
                      threads=threads, **ROWS[name][0])
    cpu0 = time.process_time()
    m = train(cfg)
    cpu = time.process_time() - cpu0
    return {"row": name, "steps": m["global_step"], "tokens": m["tokens_seen"], "seconds": m["train_seconds"],
            "tokens_per_s": m["tokens_per_second"], "tokens_per_cpu_s": round(m["tokens_seen"] / cpu, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "final_loss": m["last_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--row", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print("BENCH " + json.dumps(run_row(args.row, args.model_dir, args.data, args.steps, args.batch, args.out,
                                                args.threads)))
        return

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model_dir, data = prepare(work, problems=max(args.steps * args.batch, 8))
    results = []
    for name in args.rows.split(","):
        cmd = [sys.executable, __file__, "--row", name, "--model-dir", model_dir, "--data", data, "--out",
               str(work / name), "--steps", str(args.steps), "--batch", str(args.batch)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            sys.exit(f"row {name} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[6:]))
        print(results[-1], flush=True)

    load = os.getloadavg()
    lines = [
        "# Training throughput (CPU)",
        "",
        f"SmolLM2-135M-Instruct (fp32), {args.steps} optimizer steps of {args.batch} GSM8K reference chats "
        f"(bundled sample, ~{results[0]['tokens'] // max(results[0]['steps'], 1)} tokens/step), "
        f"max_seq_length 512, AdamW, {args.threads or os.cpu_count()} torch thread(s), via "
        f"`mathforge.train.sft.train`. `python bench/train.py {' '.join(sys.argv[1:])}`.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {load[0]:.1f} while it ran (the cores are shared with other jobs: wall-clock numbers are "
        "pessimistic; tokens per CPU-second is the steadier figure). **No GPU was available in this session**: "
        "LoRA/QLoRA GPU rows are still to be measured (see docs/training.md for the expected figures).",
        "",
        "| row | what | steps | tokens | train s | tokens/s | tokens/CPU-s | peak RSS GB | final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['row']} | {ROWS[r['row']][1]} | {r['steps']} | {r['tokens']} | {r['seconds']} | "
                     f"{r['tokens_per_s']} | {r['tokens_per_cpu_s']} | {r['peak_rss_gb']} | {r['final_loss']:.4f} |")
    out = Path(__file__).parent / "results" / "train.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
