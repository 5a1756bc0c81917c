"""Refine plumbing with the real SmolLM2 as generator, judge and refiner: a recipe runs, keeps every round, resumes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from tests.conftest import requires_smollm2

OUTCOMES = {"passed", "rewritten", "max-rounds", "unjudged", "unverified", "rewrite-failed", "kept"}


def recipe(data: str) -> dict:
    return {
        "name": "refine-tiny",
        "teachers": {"smollm2": {"backend": "local", "model": "smollm2", "batch_size": 8, "threads": 1}},
        "stages": [
            {"load": {"dataset": "gsm8k", "path": data}},
            {"generate": {"k": 1, "max_tokens": 16, "temperature": 0.7}},
            {"verify": {}},
            {"refine": {"max_rounds": 1, "judge_attempts": 1, "judge_sampling": {"max_tokens": 16},
                        "rewrite_sampling": {"max_tokens": 16}}},
        ],
    }


@requires_smollm2
def test_refine_recipe_with_smollm2(tmp_path, smollm2_backend):
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "answer": f"#### {a}"}) for q, a in [
        ("Tom has 4 apples and buys 3 more. How many apples does he have?", 7),
        ("A box holds 6 pens. How many pens are in 2 boxes?", 12),
    ]))
    run = tmp_path / "run"
    summary = run_recipe(parse_recipe(recipe(str(data))), run)
    m = summary["stages"]["refine"]
    selected = pq.read_table(run / "refine.parquet").to_pylist()
    versions = pq.read_table(run / "refine-rounds.parquet").to_pylist()
    assert len(selected) == m["samples"] == 2 and summary["accepted"] == m["accepted"]
    assert {v["outcome"] for v in versions} <= OUTCOMES
    ids = {v["id"] for v in versions}
    for v in versions:
        assert v["round"] in (0, 1) and (v["parent"] is None) == (v["round"] == 0)
        assert v["parent"] is None or v["parent"] in ids
        assert v["judge_attempts"] == 1 and (v["score"] is None) == (v["judge_error"] is not None)
        assert v["round"] == 0 or (v["tokens_out"] <= 16 and v["method"])  # rewrites are re-verified
    # a 135M model rarely writes valid judge JSON: those replies become recorded failures, never a crash
    assert m["rounds"][0]["versions"] == 2 and m["requests"]["judge"]["requests"] >= 2
    assert sum(v["selected"] for v in versions) == 2

    again = run_recipe(parse_recipe(recipe(str(data))), run)
    assert again["requests_sent"] == 0 and again["stages"]["refine"]["sent"] == 0
    assert pq.read_table(run / "refine-rounds.parquet").to_pylist() == versions
