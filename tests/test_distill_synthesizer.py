"""distill-synthesizer at CPU size: a scripted teacher writes problems, SmolLM2 + LoRA learns to write them, and
the two problem sets are compared; plus the synthesis export format on its own."""

from __future__ import annotations

import json

import pytest

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from mathforge.records import Problem
from mathforge.synth.export import synthesis_rows
from mathforge.synth.prompts import passage_messages, seed_messages
from tests.conftest import requires_smollm2
from tests.scripted_openai_server import Rule, ScriptedServer

WRITER, SOLVER = "You write new math problems", "careful math"
NEW = ["Problem: Ann has 5 pens and buys 4 more pens at the shop. How many pens does Ann have now?",
       "Problem: A farmer plants 6 rows of 7 trees in his field. How many trees did he plant?",
       "Problem: Sam reads 12 pages a day for 3 days in a row. How many pages does he read?"]


def test_synthesis_rows_replay_the_writers_prompt():
    seed = Problem("synth:s1:add_step:grade_school:0", "Ann has 9 pens. How many?", "9", "The answer is 9.", "synth",
                   {"method": "add_step", "level": "grade_school", "seed_id": "s1", "source_text": "Tom has 4 pens.",
                    "writer": "t", "writer_model": "m"})
    passage = Problem("synth:p1:from_text:high_school:0", "Find x if 2x = 6.", "3", None, "synth",
                      {"method": "from_text", "level": "high_school", "seed_id": "p1", "source_text": "Linear eqs."})
    plain = Problem("gsm8k/train/1", "Not synthesised.", "1")
    rows = synthesis_rows([seed, passage, plain], with_solution=True)
    assert [r["id"] for r in rows] == [seed.id, passage.id]
    assert rows[0]["messages"][:2] == seed_messages("Tom has 4 pens.", "add_step", "grade_school")
    assert rows[0]["messages"][2] == {"role": "assistant",
                                      "content": "Problem: Ann has 9 pens. How many?\nSolution: The answer is 9."}
    assert rows[1]["messages"][:2] == passage_messages("Linear eqs.", "high_school")
    assert rows[1]["messages"][2]["content"] == "Problem: Find x if 2x = 6."  # no solution to add
    assert rows[0]["problem_id"] == "s1" and rows[0]["teacher"] == "t"


LEAKED = "Janet has 12 red marbles and 15 blue marbles in a large jar on the kitchen table. How many marbles are there?"
# the teacher's six replies: three good problems, a benchmark leak, a copy of an earlier one and a refusal
WRITTEN = NEW + [f"Problem: {LEAKED}", NEW[0], "I cannot do that."]


@pytest.mark.slow
@requires_smollm2
def test_distill_synthesizer_end_to_end(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": LEAKED, "answer": "12 + 15 = 27\n#### 27"}) + "\n")
    rules = [Rule([WRITER, "different numbers"], WRITTEN), Rule([SOLVER], ["3 + 4 = 7. The answer is 7."])]
    # the fixed solver of the difficulty column: right (7) on its first request only, wrong (3) on every later one
    fixed = [Rule([SOLVER], ["The answer is 7.", "The answer is 3."])]
    with ScriptedServer(rules, lifetime=1500) as server, ScriptedServer(fixed, lifetime=1500) as solver_server:
        teacher = {"backend": "openai", "model": "scripted", "base_url": server.url, "api_key_env": None,
                   "max_attempts": 1}
        synth = {"methods": ["change_numbers"], "levels": ["grade_school"], "k": 2, "min_agreement": 0.5,
                 "decontam": {"benchmarks": [{"name": "gsm8k", "path": str(bench), "split": None}]},
                 "write_sampling": {"temperature": 0.8, "max_tokens": 40},
                 "solve_sampling": {"temperature": 0.7, "max_tokens": 32}}
        recipe = {
            "name": "ds", "seed": 0,
            "teachers": {"teacher": teacher,
                         "solver": {**teacher, "model": "fixed-solver", "base_url": solver_server.url},
                         "synthesiser": {"backend": "local", "model": "smollm2", "adapter": "train/adapter",
                                         "batch_size": 4, "threads": 1}},
            "stages": [
                {"load": {"dataset": "gsm8k", "path": "bundled:gsm8k-train-50", "limit": 6}},
                {"synthesize": {"generator": "teacher", "solver": "teacher", **synth}},
                {"export": {"styles": ["synthesis"], "formats": ["jsonl"], "validation_fraction": 0}},
                {"train": {"model": "smollm2", "data": "export/synthesis", "method": "lora", "lora_r": 4,
                           "lora_alpha": 8, "learning_rate": 1e-4, "batch_size": 2, "grad_accum": 1, "max_steps": 2,
                           "max_seq_length": 256, "gradient_checkpointing": False, "evaluate": False,
                           "threads": 1}},
                {"load": {"dataset": "gsm8k", "path": "bundled:gsm8k-train-50", "offset": 6, "limit": 2}},
                {"synthesize": {"generator": "synthesiser", "solver": "teacher", **synth}},
                {"synth_compare": {"sets": {"teacher": "synthesize", "distilled": "synthesize-2"},
                                   "teacher": "teacher", "solver": "solver", "max_tokens": 16,
                                   "training_data_from": ["synthesize"]}},
                {"report": {}},
            ],
        }
        run = tmp_path / "run"
        summary = run_recipe(parse_recipe(recipe), run)
        writer_requests = server.count(WRITER)
        assert not server.unmatched and not solver_server.unmatched
    # the usual checks ran on the teacher's set: one leak, one duplicate, one malformed reply rejected
    assert summary["stages"]["synthesize"]["rejected"] == {"test-leak": 1, "duplicate": 1, "malformed": 1}
    rows = [json.loads(x) for x in (run / "export" / "synthesis" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["messages"][2]["content"] for r in rows} == set(NEW)
    assert all(r["messages"][1]["content"].startswith("Original problem:") for r in rows)
    assert (run / "train" / "adapter" / "adapter_config.json").exists()
    assert writer_requests == 6  # the distilled synthesiser wrote the second set; the teacher was not asked
    compare = json.loads((run / "synth_compare.json").read_text())
    t, d = compare["teacher"], compare["distilled"]
    assert t["written_by_teacher"] is True and d["written_by_teacher"] is False
    assert t["problems"] == 3 and t["acceptance"] == 0.5 and t["teacher_requests"] == 6 + 3 * 2
    assert t["teacher_requests_per_problem"] == 4.0
    assert t["solve_rate"] == round(1 / 3, 4)  # the fixed solver was right on exactly one of the three
    assert d["candidates"] == 2
    # the distilled set carries the teacher requests that made its training data, plus its own solves
    assert d["teacher_requests"] == 12 + summary["stages"]["synthesize-2"]["requests"]["solve"]["sent"]
    assert 0 < t["distinct_2"] <= 1
    # the run's report shows both sets side by side
    md = (run / "report" / "summary.md").read_text()
    assert "## Synthesised problem sets" in md and "| metric | teacher | distilled |" in md
    assert "| acceptance | 0.5 |" in md
    assert json.loads((run / "report" / "metrics.json").read_text())["synth_compare"]["synth_compare"] == compare


def test_export_synthesis_splits_by_seed_in_every_format(tmp_path):
    import pyarrow.parquet as pq

    from mathforge.export import ExportConfig
    from mathforge.synth.export import export_synthesis

    problems = [Problem(f"synth:s{i % 5}:rewrite:grade_school:{i}", f"New problem {i}?", str(i), None, "synth",
                        {"method": "rewrite", "level": "grade_school", "seed_id": f"s{i % 5}",
                         "source_text": f"Seed {i % 5}."}) for i in range(20)]
    cfg = ExportConfig(styles=["synthesis"], formats=["jsonl", "parquet", "dataset"], validation_fraction=0.2)
    counts = export_synthesis(problems, tmp_path, cfg, seed=0)
    assert counts["train"]["rows"] + counts["validation"]["rows"] == 20
    assert counts["validation"]["problems"] == 1  # one seed of five held out, with all four of its problems
    train = pq.read_table(tmp_path / "synthesis" / "train.parquet").to_pylist()
    valid = [json.loads(x) for x in (tmp_path / "synthesis" / "validation.jsonl").read_text().splitlines()]
    assert {r["problem_id"] for r in train}.isdisjoint({r["problem_id"] for r in valid}) and len(valid) == 4
    assert train[0]["messages"][-1]["content"].startswith("Problem: New problem")
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "dataset" / "synthesis"))["train"].num_rows == 16
