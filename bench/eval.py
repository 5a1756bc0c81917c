"""Benchmark: mathforge's batched eval vs a one-at-a-time generate loop, SmolLM2-135M greedy on GSM8K test problems.

Both sides use the same loaded model, the same chat template (``backends.chat.render``), the same prompt and the same
token limit, in the same process one after the other. The batched side is the whole ``run_eval`` (planning, ledger,
generation, verification, scoring, writing); the loop side is only ``model.generate`` per problem, so the comparison
favours the loop. The loop can be run on a prefix of the problems (``--naive-n``) when a full pass would take too long.

    python bench/eval.py --n 100 --naive-n 20 --max-tokens 256 --threads 1 --json bench/results/eval.json
    python bench/eval.py --device cuda --n 1319 --naive-n 1319 --batch-size 128   # GPU: the full GSM8K test set
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def naive_loop(backend, problems, max_tokens: int) -> dict:
    """Greedy answers one problem at a time with plain ``model.generate``: the seed project's eval loop."""
    import torch

    from mathforge.backends.chat import render
    from mathforge.prompts import build_messages, get_prompt
    from mathforge.verify import check

    tok, model = backend.load()
    eos = {tok.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(model.generation_config.eos_token_id, int) else model.generation_config.eos_token_id or [])}
    texts, tokens, correct = [], 0, 0
    t0 = time.perf_counter()
    for p in problems:
        prompt = render(tok, build_messages(get_prompt("cot"), p))
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id)
        gen = out[0, enc.input_ids.shape[1]:].tolist()
        n = next((i + 1 for i, t in enumerate(gen) if t in eos), len(gen))
        tokens += n
        texts.append(tok.decode(gen[:n], skip_special_tokens=True))
        correct += check(texts[-1], p.answer).correct is True
    wall = time.perf_counter() - t0
    return {"problems": len(problems), "wall_s": round(wall, 2), "tokens_out": tokens,
            "tokens_per_s": round(tokens / wall, 1), "s_per_problem": round(wall / len(problems), 3),
            "accuracy": round(correct / len(problems), 4), "texts": texts}


def batched_eval(data: str, n: int, max_tokens: int, local: dict) -> dict:
    """The whole ``mathforge eval`` path on n problems in a fresh run directory (nothing cached)."""
    from mathforge.config import validate
    from mathforge.evaluate import EvalConfig, run_eval
    from mathforge.pipeline.context import RunContext

    cfg = validate(EvalConfig, {
        "models": {"smollm2": {"backend": "local", "model": "smollm2", **local}},
        "benchmarks": [{"name": "gsm8k", "path": data}], "limit": n, "max_tokens": max_tokens,
    }, "bench")
    run = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    ctx = RunContext(run)
    t0 = time.perf_counter()
    doc = run_eval(ctx, cfg, run / "eval")
    wall = time.perf_counter() - t0
    ctx.close()
    import pyarrow.parquet as pq

    rows = pq.read_table(run / "eval" / "samples.parquet").to_pylist()
    rows.sort(key=lambda r: int(r["problem_id"].rsplit("/", 1)[1]))
    tokens = sum(r["tokens_out"] for r in rows)
    return {"problems": n, "wall_s": round(wall, 2), "tokens_out": tokens, "tokens_per_s": round(tokens / wall, 1),
            "gen_tokens_per_s": doc["generation"]["tokens_per_s"], "gen_seconds": doc["generation"]["gen_seconds"],
            "s_per_problem": round(wall / n, 3), "accuracy": round(doc["results"][0]["metrics"]["greedy"]["value"], 4),
            "texts": [r["text"] for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/gsm8k/test.jsonl")
    ap.add_argument("--n", type=int, default=100, help="problems for the batched eval")
    ap.add_argument("--naive-n", type=int, default=20, help="problems for the one-at-a-time loop (a prefix)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads, both sides (default: all cores)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, ... (auto: cuda when available)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()

    import torch

    from mathforge.backends.local import LocalBackend, LocalConfig
    from mathforge.datasets import load

    local = {"batch_size": args.batch_size, "threads": args.threads, "device": args.device}
    backend = LocalBackend("smollm2", LocalConfig(model="smollm2", **local))
    t0 = time.perf_counter()
    backend.prepare()  # shared by both sides through the process-wide model cache
    load_s = time.perf_counter() - t0
    problems = list(load("gsm8k", args.data, limit=args.naive_n))
    load_avg = [os.getloadavg()[0]]
    naive = naive_loop(backend, problems, args.max_tokens)
    load_avg.append(os.getloadavg()[0])
    batched = batched_eval(args.data, args.n, args.max_tokens, local)
    load_avg.append(os.getloadavg()[0])
    same = sum(a == b for a, b in zip(naive["texts"], batched["texts"]))
    gpu = torch.cuda.get_device_name(0) if backend.device.startswith("cuda") else None
    result = {
        "device": gpu or f"cpu ({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "platform": platform.platform(), "model_load_s": round(load_s, 1), "max_tokens": args.max_tokens,
        "batch_size": args.batch_size, "load_avg_1min": load_avg,
        "naive": {k: v for k, v in naive.items() if k != "texts"},
        "batched": {k: v for k, v in batched.items() if k != "texts"},
        "speedup_tokens_per_s": round(batched["tokens_per_s"] / naive["tokens_per_s"], 2),
        "speedup_s_per_problem": round(naive["s_per_problem"] / batched["s_per_problem"], 2),
        "naive_projected_wall_s": round(naive["s_per_problem"] * args.n, 1),
        "identical_greedy_texts": f"{same}/{len(problems)}",
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
