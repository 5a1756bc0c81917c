"""Loss-based scores with a small proxy model: perplexity of the response, and instruction-following difficulty.

IFD (Li et al. 2024, "Superfiltering"): IFD = PPL(response | question) / PPL(response). Near 1, the question barely
helps the model predict the answer (hard to learn from, or noise); well below 1, the answer follows from the
question. Rows with IFD ≥ ``ifd_max`` are ranked last, as Superfiltering does. Cost: one forward pass per row for
perplexity, two for IFD, batched; memory is the proxy plus one batch of activations, independent of the row count.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from mathforge.select.config import ProxyConfig, SelectConfig


def load_proxy(cfg: ProxyConfig) -> tuple[Any, Any]:
    """Tokenizer and model of the proxy, in float32 on the CPU (or the first GPU), in eval mode."""
    import torch

    from mathforge.backends.models import load_tokenizer_and_model, resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok, model = load_tokenizer_and_model(resolve_model(cfg.model, cfg.gguf_file), device=device,
                                          dtype="float32" if device == "cpu" else "auto", for_training=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return tok, model


def encode(tok: Any, pairs: Sequence[tuple[str, str]], cfg: ProxyConfig, *, with_prompt: bool = True
           ) -> list[tuple[list[int], int]]:
    """Token ids of (chat prompt +) response and where the response starts; the response tail is cut to fit."""
    from mathforge.backends.chat import render

    out = []
    for question, response in pairs:
        prompt_ids: list[int] = []
        if with_prompt:
            msgs = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
            prompt_ids = tok(render(tok, msgs + [{"role": "user", "content": question}]),
                             add_special_tokens=False)["input_ids"]
            prompt_ids = prompt_ids[-(cfg.max_seq_length // 2):]  # a prompt never crowds out its response
        resp = tok(response.strip(), add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            resp = resp + [tok.eos_token_id]
        ids = (prompt_ids + resp)[: cfg.max_seq_length]
        out.append((ids, len(prompt_ids)))
    return out


def mean_nll(model: Any, tok: Any, encoded: Sequence[tuple[list[int], int]], batch_size: int) -> list[float]:
    """Mean negative log-likelihood of each row's response tokens (positions from its start index on)."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = [math.nan] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths share a batch
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            for j, i in enumerate(idx):
                seq, start = encoded[i]
                ids[j, : len(seq)] = torch.tensor(seq)
                mask[j, : len(seq)] = 1
                labels[j, max(start, 1): len(seq)] = torch.tensor(seq[max(start, 1):])
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = labels[:, 1:].to(device)
            valid = target != -100
            nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
            per_row = (nll.sum(1) / valid.sum(1).clamp(min=1)).tolist()
            for j, i in enumerate(idx):
                out[i] = per_row[j] if valid[j].any() else math.nan
    return out


def loss_scores(pairs: Sequence[tuple[str, str]], cfg: SelectConfig, *, ifd: bool) -> tuple[list[float], dict]:
    """Perplexity (higher = harder = kept first) or IFD scores of every (question, response) pair."""
    from mathforge.train.model import cpu_threads

    tok, model = load_proxy(cfg.proxy)
    with cpu_threads(cfg.proxy.threads):
        cond = mean_nll(model, tok, encode(tok, pairs, cfg.proxy), cfg.proxy.batch_size)
        if not ifd:
            scores = [math.exp(x) if math.isfinite(x) else -math.inf for x in cond]
            return scores, {"proxy": cfg.proxy.model, "forward_passes_per_row": 1}
        alone = mean_nll(model, tok, encode(tok, pairs, cfg.proxy, with_prompt=False), cfg.proxy.batch_size)
    scores, capped = [], 0
    for c, a in zip(cond, alone):
        value = math.exp(c - a) if math.isfinite(c) and math.isfinite(a) else -math.inf
        if cfg.ifd_max is not None and value >= cfg.ifd_max:
            capped += 1
            value = -value  # ranked after every row under the cap, still ordered among themselves
        scores.append(value)
    return scores, {"proxy": cfg.proxy.model, "forward_passes_per_row": 2, "ifd_at_or_above_max": capped}
