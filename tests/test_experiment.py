"""The self-improvement experiment end to end, tiny: SmolLM2 samples, curates, trains three arms, is scored, reported."""

from __future__ import annotations

import json

import pytest

from mathforge.evaluate.config import BenchmarkSpec
from mathforge.experiment import ExperimentConfig, arm_data, run_experiment
from tests.conftest import requires_smollm2
from tests.test_train import smol_dir  # noqa: F401  (the embedded model as a plain directory: loads in 0.2 s)


def easy_pool(path) -> str:
    """Three sums so easy that the 135M base gets some of its samples right, so RFT has rows to keep."""
    rows = [{"id": f"easy/{i}", "question": f"What is {a} + {b}?", "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}"
             f"\n#### {a + b}", "kind": "add"} for i, (a, b) in enumerate([(2, 3), (4, 4), (1, 6)])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tiny(run_dir, model: str) -> ExperimentConfig:
    return ExperimentConfig(
        # seed 1: with seed 0 the control drew the very row RFT kept, so two arms had identical adapters (eval
        # refuses such twins); a real run has far more rows than this
        run_dir=str(run_dir), model=model, batch_size=12, seed=1, k=4, max_tokens=32, rows=3,
        train_set=BenchmarkSpec(name="arith", path=easy_pool(run_dir.parent / "easy.jsonl"), split="train"),
        test=BenchmarkSpec(name="arith", path="bundled:arith-test", split="test", limit=3),
        ood=BenchmarkSpec(name="svamp", path="bundled:svamp-100", split="test", limit=2),
        train={"max_steps": 2, "batch_size": 2, "save_steps": 1, "max_seq_length": 128},
    )


def test_arm_data_has_equal_counts_and_the_control_ignores_the_verdict():
    from mathforge.datasets import load

    problems = list(load("arith", "bundled:arith-train", limit=4))
    fam = {p.id: p for p in problems}
    samples = []
    for i, p in enumerate(problems):  # one right sample (the reference) and one wrong one per problem
        for j, (text, ok) in enumerate([(p.solution, True), (f"I think it is {i}1.\nThe answer is {i}1.", False)]):
            samples.append({"id": f"{p.id}#{j}", "problem_id": p.id, "question": p.question, "gold": p.answer,
                            "teacher": "base", "text": text, "correct": ok, "extracted": "x", "finish_reason": "stop"})
    cfg = ExperimentConfig(run_dir="unused", report=False)
    data, funnel = arm_data(cfg, problems, samples)
    assert funnel["samples"] == 8 and funnel["verified"] == 4 and funnel["distinct"] == 4
    assert {len(v) for v in data.values()} == {4} and funnel["rows_per_arm"] == 4
    assert all(s["correct"] for s in data["rft"])
    assert funnel["unverified_pool"] == 8  # the control draws from right and wrong samples alike
    assert all(s["problem_id"] in fam for s in data["control"] + data["reference"])


@requires_smollm2
@pytest.mark.slow
def test_tiny_experiment_trains_every_arm_scores_and_reports(tmp_path, smol_dir):  # noqa: F811
    cfg = tiny(tmp_path / "science", smol_dir)
    doc = run_experiment(cfg)
    run = tmp_path / "science"
    assert doc["funnel"]["samples"] == 12 and 1 <= doc["funnel"]["distinct"] <= doc["funnel"]["verified"]
    for arm in ("rft", "control", "reference"):
        info = doc["arms"][arm]
        assert info["global_step"] == 2 and info["rows"] == doc["funnel"]["rows_per_arm"]
        assert (run / arm / "train" / "adapter" / "adapter_model.safetensors").exists()
    results = json.loads((run / "eval" / "results.json").read_text())
    scored = {(r["model"], r["benchmark"]) for r in results["results"]}
    assert scored == {(m, b) for m in ("base", "rft", "control", "reference") for b in ("arith", "svamp")}
    for r in results["results"]:
        g = r["metrics"]["greedy"]
        assert g["ci_low"] <= g["value"] <= g["ci_high"] and g["n"] == (3 if r["benchmark"] == "arith" else 2)
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    pairs = {(c["a"], c["b"], c["benchmark"]) for c in metrics["contrasts"]}
    assert ("rft", "control", "arith") in pairs and ("rft", "reference", "svamp") in pairs
    assert set(metrics["training"]) == {"rft/train", "control/train", "reference/train"}
    assert "training.png" in metrics["plots"] and "funnel.png" in metrics["plots"]
    assert metrics["runs"][0]["funnel"]["generated"] == 12
    assert "Paired comparisons" in (run / "report" / "summary.md").read_text()
    # A rerun sends no request and trains nothing: every answer is in the ledger, every arm finished.
    again = run_experiment(cfg)
    assert again["generation"]["sent"] == 0 and again["eval"]["generation"]["sent"] == 0
    # The eval answered with continuous batching; static batches are the same model in the ledger (same keys).
    assert cfg.eval_batching == "refill"
    static = run_experiment(cfg.model_copy(update={"eval_batching": "static"}))
    assert static["eval"]["generation"]["sent"] == 0
    assert all(again["arms"][a]["cached"] for a in ("rft", "control", "reference"))
    assert again["eval"]["results"] == doc["eval"]["results"]
