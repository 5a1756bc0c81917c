"""Batched local generation vs a naive one-prompt-at-a-time loop, same model, same 16 prompts, same process.

Writes bench/results/local_backend.md. Usage: python bench/local_backend.py [--prompts 16] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mathforge.backends import GenRequest, SamplingParams
from mathforge.backends.chat import render
from mathforge.backends.local import LocalBackend, LocalConfig
from mathforge.datasets import load
from mathforge.prompts import build_messages, get_prompt


class CountingSink:
    def __init__(self):
        self.tokens = 0
        self.n = 0

    def ok(self, r, c):
        self.ok_many([(r, c)])

    def ok_many(self, items):
        self.n += len(items)
        self.tokens += sum(c.tokens_out for _, c in items)

    def fail(self, r, e, *, final):
        raise RuntimeError(e)


def naive(backend: LocalBackend, requests: list[GenRequest]) -> tuple[int, float]:
    """The baseline users write: tokenize one prompt, generate, decode, next."""
    tok, model = backend.load()
    total, t0 = 0, time.perf_counter()
    for r in requests:
        enc = tok(render(tok, r.messages), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=r.params.max_tokens, do_sample=True,
                                 temperature=r.params.temperature, top_p=r.params.top_p, pad_token_id=tok.pad_token_id)
        total += out.shape[1] - enc.input_ids.shape[1]
    return total, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    problems = list(load("gsm8k", path="bundled:gsm8k-train-50", limit=args.prompts))
    params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    reqs = [GenRequest(f"k{i}", build_messages(get_prompt("cot"), p), params, 0) for i, p in enumerate(problems)]
    backend = LocalBackend("smollm2", LocalConfig(model="smollm2", batch_size=args.prompts))
    t = time.perf_counter()
    backend.prepare()
    load_s = time.perf_counter() - t
    # warm-up (first-call allocations), not timed
    backend.generate(reqs[:2], CountingSink())
    sink = CountingSink()
    t = time.perf_counter()
    backend.generate(reqs, sink)
    batched_s = time.perf_counter() - t
    naive_tokens, naive_s = naive(backend, reqs)
    rows = [
        ("naive loop (1 prompt at a time)", naive_tokens, naive_s, naive_tokens / naive_s),
        (f"mathforge batched (batch {args.prompts})", sink.tokens, batched_s, sink.tokens / batched_s),
    ]
    speedup = rows[1][3] / rows[0][3]
    lines = [
        "# Local backend: batched vs naive generation",
        "",
        f"SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32), CPU, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {args.prompts} GSM8K train prompts (cot), "
        f"temperature 0.7, top_p 0.95, max_tokens {args.max_tokens}; both measured in the same process. "
        f"Model load: {load_s:.1f} s (not counted).",
        "",
        "| method | generated tokens | wall s | tokens/s |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {tk} | {s:.1f} | {r:.1f} |" for n, tk, s, r in rows],
        "",
        f"**Speed-up of batched over naive: {speedup:.2f}x** (target: at least 4x).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "local_backend.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
