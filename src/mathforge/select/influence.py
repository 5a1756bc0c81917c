"""LESS-style influence (Xia et al. 2024): keep the training rows whose gradients point where the target's do.

1. Warm up a LoRA on the proxy with a small random share of the candidates (AdamW, one checkpoint per epoch).
2. At each checkpoint, the gradient of every target example's loss (plain SGD direction) and of every candidate's
   loss turned into the Adam update it would cause (with that checkpoint's moment estimates), both over the LoRA
   weights only.
3. Each gradient is randomly projected to ``proj_dim`` dimensions and normalised. The projection is a count sketch
   (every LoRA weight goes to one seeded bucket with a seeded sign: a sparse Johnson-Lindenstrauss map), so it costs
   O(weights) per example and needs no dense weights × dims matrix in memory.
4. score = Σ over checkpoints of lr_c × mean over target examples of cos(candidate, target).

Cost per candidate: one forward + backward pass of the proxy per checkpoint (plus the warm-up's share of training).
Memory: the proxy, its LoRA and two Adam moments, one gradient at a time, and ``(rows + targets) × proj_dim`` floats
of features per checkpoint (1,000 rows at 4,096 dims: 16 MB).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from mathforge.errors import DataError
from mathforge.select.config import SelectConfig
from mathforge.train.data import read_rows_file

Pair = tuple[str, str]


def read_target(path: str, limit: int | None) -> list[Pair]:
    """(question, answer) pairs of the target set: chat rows, samples (question + text) or problems (+ solution)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"select: influence target {p} is not a file (.jsonl or .parquet)")
    rows = read_rows_file(p)
    out: list[Pair] = []
    for n, r in enumerate(rows, 1):
        if r.get("messages"):
            user = [m["content"] for m in r["messages"] if m.get("role") == "user"]
            bot = [m["content"] for m in r["messages"] if m.get("role") == "assistant"]
            if user and bot:
                out.append((user[-1], bot[-1]))
                continue
        response = r.get("text") or r.get("solution")
        if not r.get("question") or not response:
            raise DataError(f"{p}: row {n}: a target example needs 'messages', or 'question' with 'solution' or 'text'")
        out.append((str(r["question"]), str(response)))
    if not out:
        raise DataError(f"{p}: the influence target set is empty")
    return out[:limit] if limit else out


class Sketch:
    """A seeded count sketch from the LoRA weights (flattened in a fixed order) to ``dim`` dimensions."""

    def __init__(self, n: int, dim: int, seed: int):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, dim, (n,), generator=g)
        self.sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
        self.dim = dim

    def __call__(self, flat: Any) -> Any:
        import torch

        out = torch.zeros(self.dim).index_add_(0, self.bucket, flat * self.sign)
        return out / out.norm().clamp(min=1e-12)


def _lora_model(cfg: SelectConfig, seed: int) -> tuple[Any, Any, list[Any]]:
    import torch

    from mathforge.errors import require
    from mathforge.select.proxy import load_proxy
    from mathforge.train.model import _drop_gguf_quantizer

    peft = require("peft", "train")
    tok, model = load_proxy(cfg.proxy)
    _drop_gguf_quantizer(model)
    model.config.use_cache = False
    inf = cfg.influence
    torch.manual_seed(seed)
    lora = peft.LoraConfig(r=inf.lora_r, lora_alpha=inf.lora_alpha, lora_dropout=0.0,
                           target_modules=list(inf.target_modules), bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    return tok, model, params


def _loss(model: Any, ids: list[int], start: int) -> Any:
    import torch

    x = torch.tensor([ids], device=next(model.parameters()).device)
    labels = x.clone()
    labels[0, : max(start, 1)] = -100
    return model(input_ids=x, labels=labels).loss


def _warmup(model: Any, params: list[Any], encoded: list[tuple[list[int], int]], cfg: SelectConfig, seed: int
            ) -> list[dict[str, Any]]:
    """Train the LoRA on the warm-up rows; return per-epoch checkpoints (weights, Adam moments, lr)."""
    import torch

    inf = cfg.influence
    rng = random.Random(seed)
    steps_per_epoch = -(-len(encoded) // inf.batch_size)
    total = steps_per_epoch * inf.warmup_epochs
    opt = torch.optim.AdamW(params, lr=inf.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    checkpoints = []
    model.train()
    for _ in range(inf.warmup_epochs):
        lrs = []
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for b in range(0, len(order), inf.batch_size):
            opt.zero_grad(set_to_none=True)
            batch = order[b: b + inf.batch_size]
            for i in batch:
                (_loss(model, *encoded[i]) / len(batch)).backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        state = [opt.state[p] for p in params]
        checkpoints.append({
            "weights": [p.detach().clone() for p in params],
            "exp_avg": [s["exp_avg"].clone() for s in state],
            "exp_avg_sq": [s["exp_avg_sq"].clone() for s in state],
            "lr": sum(lrs) / len(lrs),  # the epoch's mean step size weighs its checkpoint, as in LESS
        })
    model.eval()
    return checkpoints


def _features(model: Any, params: list[Any], encoded: Sequence[tuple[list[int], int]], sketch: Sketch,
              adam: tuple[Any, Any] | None) -> Any:
    """Projected, normalised per-example gradients (Adam update directions when ``adam`` moments are given)."""
    import torch

    b1, b2, eps = 0.9, 0.999, 1e-8
    out = torch.empty((len(encoded), sketch.dim))
    for n, (ids, start) in enumerate(encoded):
        model.zero_grad(set_to_none=True)
        _loss(model, ids, start).backward()
        g = torch.cat([p.grad.reshape(-1).float().cpu() for p in params])
        if adam is not None:
            m = b1 * adam[0] + (1 - b1) * g
            v = b2 * adam[1] + (1 - b2) * g * g
            g = m / (v.sqrt() + eps)
        out[n] = sketch(g)
    return out


def influence_scores(pairs: Sequence[Pair], cfg: SelectConfig, seed: int) -> tuple[list[float], dict[str, Any]]:
    """LESS scores of every candidate against the target set (higher = more aligned with the target)."""
    import torch

    from mathforge.select.proxy import encode
    from mathforge.train.model import cpu_threads

    inf = cfg.influence
    target = read_target(inf.target or "", inf.target_limit)
    with cpu_threads(cfg.proxy.threads):
        tok, model, params = _lora_model(cfg, seed)
        cand = encode(tok, pairs, cfg.proxy)
        tgt = encode(tok, target, cfg.proxy)
        n_warm = min(len(cand), max(inf.warmup_min, round(inf.warmup_fraction * len(cand))))
        warm = random.Random(seed).sample(range(len(cand)), n_warm)
        checkpoints = _warmup(model, params, [cand[i] for i in warm], cfg, seed)
        sketch = Sketch(sum(p.numel() for p in params), inf.proj_dim, seed)
        scores = torch.zeros(len(cand))
        for ck in checkpoints:
            with torch.no_grad():
                for p, w in zip(params, ck["weights"]):
                    p.copy_(w)
            t = _features(model, params, tgt, sketch, None)
            moments = (torch.cat([m.reshape(-1) for m in ck["exp_avg"]]),
                       torch.cat([v.reshape(-1) for v in ck["exp_avg_sq"]]))
            c = _features(model, params, cand, sketch, moments)
            scores += ck["lr"] * (c @ t.T).mean(dim=1)
    info = {"proxy": cfg.proxy.model, "target_examples": len(tgt), "warmup_examples": n_warm,
            "checkpoints": len(checkpoints), "lora_weights": sum(p.numel() for p in params),
            "proj_dim": inf.proj_dim, "backward_passes_per_row": len(checkpoints)}
    return scores.tolist(), info
