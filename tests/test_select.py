"""The select stage: budgets, ranking, rejects with scores, and each scoring method on the real embedded model."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from mathforge.config import validate
from mathforge.errors import ConfigError, DataError
from mathforge.pipeline.context import RunContext
from mathforge.select import SelectConfig, select_rows
from mathforge.select.influence import Sketch
from mathforge.select.stage import SelectProblemsStage, SelectStage
from tests.conftest import requires_smollm2


def samples(pattern: dict[str, list[bool]]) -> list[dict]:
    """Verified sample rows: problem id -> the correct flags of its samples."""
    rows = []
    for pid, flags in pattern.items():
        for i, ok in enumerate(flags):
            rows.append({"id": f"{pid}#{i}", "problem_id": pid, "question": f"What is {pid}?",
                         "text": f"Solution {i} of {pid}.", "correct": ok})
    return rows


def test_budget_must_be_exactly_one_and_influence_needs_a_target():
    with pytest.raises(ConfigError, match="exactly one budget"):
        validate(SelectConfig, {"method": "random"}, "select")
    with pytest.raises(ConfigError, match="exactly one budget"):
        validate(SelectConfig, {"keep": 2, "fraction": 0.5}, "select")
    with pytest.raises(ConfigError, match="influence.target"):
        validate(SelectConfig, {"method": "influence", "keep": 2}, "select")
    with pytest.raises(ConfigError, match="methd"):
        validate(SelectConfig, {"methd": "random", "keep": 2}, "select")


def test_random_is_seeded_counts_the_budget_and_rejects_the_rest_with_scores():
    rows = samples({f"p{i}": [True] for i in range(20)})
    a = select_rows(rows, SelectConfig(method="random", fraction=0.25), seed=1)
    b = select_rows(rows, SelectConfig(method="random", fraction=0.25), seed=1)
    c = select_rows(rows, SelectConfig(method="random", fraction=0.25), seed=2)
    assert [r["id"] for r in a.kept] == [r["id"] for r in b.kept]
    assert [r["id"] for r in a.kept] != [r["id"] for r in c.kept]
    assert len(a.kept) == 5 and len(a.rejected) == 15
    assert {r["id"] for r in a.kept} | {r["id"] for r, _ in a.rejected} == {r["id"] for r in rows}
    cutoff = min(r["select_score"] for r in a.kept)
    assert all(r["select_score"] <= cutoff for r, _ in a.rejected)
    assert all(reason.startswith("not-selected: random score") for _, reason in a.rejected)


def test_pass_rate_keeps_problems_sometimes_solved_and_whole_problems():
    rows = samples({"always": [True] * 4, "never": [False] * 4, "half": [True, False, True, False],
                    "quarter": [True, False, False, False]})
    res = select_rows(rows, SelectConfig(method="pass-rate", keep=2, unit="problem"), seed=0)
    assert {r["problem_id"] for r in res.kept} == {"half", "quarter"}
    assert len(res.kept) == 8  # every sample of a kept problem stays
    assert math.isclose(next(r for r in res.kept if r["problem_id"] == "half")["select_score"], 1.0)
    band = select_rows(rows, SelectConfig(method="pass-rate", keep=4, unit="problem", min_pass_rate=0.3), seed=0)
    scores = {r["problem_id"]: r["select_score"] for r in band.kept}
    assert scores["quarter"] == -1.0 and scores["half"] == 1.0  # below the band: ranked last
    with pytest.raises(DataError, match="run verify first"):
        select_rows([{"id": "x", "problem_id": "p", "question": "q", "text": "t"}],
                    SelectConfig(method="pass-rate", keep=1), seed=0)


def test_sketch_preserves_cosine_similarity():
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(50_000, generator=g)
    near = base + 0.5 * torch.randn(50_000, generator=g)
    far = torch.randn(50_000, generator=g)
    sk = Sketch(50_000, 2048, seed=3)
    true_near = torch.nn.functional.cosine_similarity(base, near, dim=0).item()
    assert abs(float(sk(base) @ sk(near)) - true_near) < 0.05
    assert abs(float(sk(base) @ sk(far))) < 0.08


def test_stage_writes_kept_rows_and_rejects_the_rest(tmp_path):
    rows = samples({"a": [True, False], "b": [True, True], "c": [False, False]})
    ctx = RunContext(tmp_path / "run", seed=0)
    try:
        ctx.write_samples("verified", [{**r, "gold": "1", "teacher": "t", "model": "m", "sample_index": 0,
                                        "prompt_key": "cot", "request_key": r["id"]} for r in rows])
        metrics = SelectStage().run(ctx, SelectConfig(method="pass-rate", keep=1, unit="problem"))
        latest = ctx.state.latest("samples").path
    finally:
        ctx.close()
    kept = pq.read_table(tmp_path / "run" / "select.parquet").to_pylist()
    assert {r["problem_id"] for r in kept} == {"a"} and all("select_score" in r for r in kept)
    rejected = [r for r in pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist() if r["stage"] == "select"]
    assert {json.loads(r["record"])["problem_id"] for r in rejected} == {"b", "c"}
    assert metrics["units_kept"] == 1 and metrics["rows_in"] == 6
    assert latest == "select.parquet"  # what a later stage reads


def test_select_problems_keeps_the_score_in_meta(tmp_path):
    from mathforge.records import Problem

    ctx = RunContext(tmp_path / "run", seed=0)
    try:
        ctx.write_problems("load", [Problem(f"p{i}", f"What is {i}?", str(i), f"It is {i}.") for i in range(4)])
        metrics = SelectProblemsStage().run(ctx, SelectConfig(method="random", keep=3))
    finally:
        ctx.close()
    kept = [Problem.from_row(r) for r in pq.read_table(tmp_path / "run" / "select_problems.parquet").to_pylist()]
    assert len(kept) == 3 and all(isinstance(p.meta["select_score"], float) for p in kept)
    assert metrics["rows_kept"] == 3


@pytest.mark.slow
@requires_smollm2
def test_perplexity_and_ifd_rank_as_defined_on_the_real_model():
    rows = [
        {"id": "copy", "question": "Repeat exactly: the red fox jumps over the lazy brown dog.",
         "text": "the red fox jumps over the lazy brown dog."},
        {"id": "unrelated", "question": "What is 2 + 2?", "text": "the red fox jumps over the lazy brown dog."},
        {"id": "noise", "question": "What is 2 + 2?", "text": "zq xv 9#k pwl qq rrt mmz 4$ vv"},
        {"id": "fine", "question": "What is 2 + 2?", "text": "2 + 2 = 4. The answer is 4."},
    ]
    ppl = select_rows(rows, SelectConfig(method="perplexity", keep=1), seed=0)
    by = {r["id"]: r["select_score"] for r in ppl.kept + [r for r, _ in ppl.rejected]}
    assert by["noise"] > by["fine"] and ppl.kept[0]["id"] == "noise"
    ifd = select_rows(rows, SelectConfig(method="ifd", keep=4, ifd_max=None), seed=0)
    by = {r["id"]: r["select_score"] for r in ifd.kept}
    # The question that contains the answer makes it far easier to predict than the same answer after 2 + 2.
    assert by["copy"] < 0.5 * by["unrelated"]
    assert ifd.metrics["forward_passes_per_row"] == 2


@pytest.mark.slow
@requires_smollm2
def test_influence_prefers_candidates_like_the_target(tmp_path):
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "solution": f"{a} + {b} = {a + b}. "
                                          f"The answer is {a + b}."}) + "\n" for a, b in [(3, 4), (6, 2), (5, 5)]))
    rows = [{"id": f"add{a}", "question": f"What is {a} plus {a + 1}?",
             "text": f"{a} + {a + 1} = {2 * a + 1}. The answer is {2 * a + 1}."} for a in range(1, 7)]
    rows += [{"id": f"poem{a}", "question": f"Write line {a} of a poem about the sea.",
              "text": "The grey waves roll and whisper to the shore, and gulls cry out above the foam once more."}
             for a in range(1, 7)]
    cfg = SelectConfig(method="influence", keep=6, influence={"target": str(target), "warmup_min": 4,
                                                             "warmup_epochs": 2, "proj_dim": 1024})
    res = select_rows(rows, cfg, seed=0)
    kept = {r["id"] for r in res.kept}
    assert sum(k.startswith("add") for k in kept) >= 5, res.kept
    assert res.metrics["checkpoints"] == 2 and res.metrics["target_examples"] == 3


def test_cli_selects_from_a_samples_file(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    rows = samples({"a": [True, False], "b": [True, True]})
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps({**r, "gold": "1", "teacher": "t"}) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["select", str(src), "--method", "pass-rate", "--keep", "1", "--unit", "problem",
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "2 of 4 rows kept" in res.output
    kept = pq.read_table(tmp_path / "out" / "select.parquet").to_pylist()
    assert {r["problem_id"] for r in kept} == {"a"}
    bad = CliRunner().invoke(app, ["select", str(src), "--method", "random"])
    assert bad.exit_code != 0 and "exactly one budget" in str(bad.output) + str(bad.exception)
