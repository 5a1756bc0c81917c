"""The in-process vLLM backend: its request path over a stand-in ``vllm`` module, and the real engine where present."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass

import pytest

from mathforge.backends import make_backend, parse_teacher
from mathforge.backends.base import GenRequest, SamplingParams
from mathforge.backends.chat import render


@dataclass
class _Out:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"


class _Tokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class _LLM:
    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def get_tokenizer(self):
        return _Tokenizer()

    def generate(self, prompts, params, use_tqdm=False):
        _LLM.calls.append((prompts, params))
        return [types.SimpleNamespace(prompt_token_ids=[1] * 7,
                                      outputs=[_Out(i, f"{p} sample {i}", [0] * (3 + i)) for i in range(sp.n)])
                for p, sp in zip(prompts, params)]


class _SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class _Sink:
    def __init__(self):
        self.items, self.batches = [], 0

    def ok(self, r, c):
        self.ok_many([(r, c)])

    def ok_many(self, items):
        self.items.extend(items)
        self.batches += 1

    def fail(self, r, e, *, final):
        raise AssertionError(e)


def test_vllm_backend_renders_once_and_samples_with_n(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=_LLM, SamplingParams=_SamplingParams))
    _LLM.calls = []
    cfg = parse_teacher("v", {"backend": "vllm", "model": "some/model", "chunk_prompts": 2}, "test")
    backend = make_backend("v", cfg)
    assert backend.identity() == ("some/model", "local:vllm")
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, seed=3)
    reqs = [GenRequest(f"k{p}-{i}", [{"role": "user", "content": f"q{p}"}], params, i) for p in range(3) for i in range(4)]
    sink = _Sink()
    backend.generate(reqs, sink)
    assert len(_LLM.calls) == 2 and sink.batches == 2  # 3 prompts in chunks of 2, each committed as it ends
    prompts = [p for call in _LLM.calls for p in call[0]]
    assert prompts == [render(_Tokenizer(), [{"role": "user", "content": f"q{p}"}]) for p in range(3)]
    sps = [sp for call in _LLM.calls for sp in call[1]]
    assert [sp.n for sp in sps] == [4, 4, 4] and sps[0].temperature == 0.7 and sps[0].max_tokens == 64
    assert len({r.key for r, _ in sink.items}) == 12
    by_key = {r.key: c for r, c in sink.items}
    assert by_key["k1-2"].text.endswith("sample 2") and by_key["k1-2"].tokens_out == 5 and by_key["k1-2"].tokens_in == 7


def test_vllm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    backend = make_backend("v", parse_teacher("v", {"backend": "vllm", "model": "m"}, "test"))
    with pytest.raises(Exception, match=r"mathforge\[vllm\]"):
        backend.prepare()


@pytest.mark.vllm
@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("MATHFORGE_VLLM_MODEL"), reason="set MATHFORGE_VLLM_MODEL to a local model")
def test_vllm_real_engine_generates():
    backend = make_backend("v", parse_teacher("v", {"backend": "vllm", "model": os.environ["MATHFORGE_VLLM_MODEL"],
                                                   "gpu_memory_utilization": 0.5}, "test"))
    params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=32, seed=0)
    reqs = [GenRequest(f"k{i}", [{"role": "user", "content": "What is 2 + 3?"}], params, i) for i in range(4)]
    sink = _Sink()
    backend.generate(reqs, sink)
    assert len(sink.items) == 4 and all(c.tokens_out > 0 for _, c in sink.items)
