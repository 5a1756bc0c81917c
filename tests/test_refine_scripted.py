"""Exact behaviour of the refine loop against a scripted OpenAI-compatible server: retries, overrides, hints, resume."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mathforge.backends import parse_teacher
from mathforge.pipeline.context import RunContext
from mathforge.records import Sample
from mathforge.refine import RefineConfig, RefineStage
from mathforge.refine.prompts import HINT_WRONG
from tests.scripted_openai_server import Rule, ScriptedServer

QUESTION = "Tom has 4 apples and buys 3 more. How many apples does he have?"
TEXTS = {
    "ALPHA": "ALPHA: 4 + 3 = 7. The answer is 7.",  # judge reply malformed once, then valid
    "BRAVO": "BRAVO: 4 + 3 = 7. The answer is 7.",  # judge reply malformed every time
    "CHARLIE": "CHARLIE: 4 + 4 = 8. The answer is 8.",  # wrong, but the judge loves it
    "DELTA": "DELTA: 4 + 3 = 7. The answer is 7.",  # right, but the judge says incorrect
    "ECHO": "ECHO: 4 + 3 = 7. The answer is 7.",  # right, low score; the rewrite breaks it
}


def scores(c: int, rest: int, critique: str = "fine") -> str:
    return json.dumps({"correctness": c, "completeness": rest, "clarity": rest, "arithmetic": rest, "critique": critique})


def rules() -> list[Rule]:
    judge = "strict grader"
    return [
        Rule([judge, "ALPHA"], ["I think it is good!", "```json\n" + scores(9, 9) + "\n```"]),
        Rule([judge, "BRAVO"], ["{bad json", scores(11, 9), scores(9, 9).replace('"critique"', '"notes"')]),
        Rule([judge, "CHARLIE-FIXED"], [scores(9, 9)]),
        Rule([judge, "CHARLIE"], [scores(10, 10, "perfect work")]),
        Rule([judge, "DELTA"], [scores(1, 9, "the answer is incorrect")]),
        Rule([judge, "ECHO-BROKEN"], [scores(9, 9)]),
        Rule([judge, "ECHO"], [scores(6, 5, "explain why you add")]),
        Rule(["earlier attempt", "CHARLIE"], ["CHARLIE-FIXED: 4 + 3 = 7. The answer is 7."]),
        Rule(["earlier attempt", "ECHO"], ["ECHO-BROKEN: 4 + 4 = 8. The answer is 8."]),
    ]


def make_ctx(run, url: str) -> RunContext:
    teacher = {"backend": "openai", "model": "scripted", "base_url": url, "api_key_env": None, "max_attempts": 1}
    return RunContext(run, teachers={"t": parse_teacher("t", teacher, "test")}, seed=0)


def write_samples(ctx: RunContext) -> None:
    rows = [
        Sample(id=f"p1#t#{i}", problem_id="p1", question=QUESTION, gold="7", teacher="t", model="scripted",
               sample_index=i, prompt_key="cot", request_key=f"k{i}", text=text).to_row()
        for i, text in enumerate(TEXTS.values())
    ]
    ctx.write_samples("verified", rows)


def run_refine(run, url: str, **cfg) -> tuple[dict, list[dict], list[dict]]:
    ctx = make_ctx(run, url)
    try:
        if not ctx.has("samples"):
            write_samples(ctx)
        metrics = RefineStage().run(ctx, RefineConfig(max_rounds=1, **cfg))
    finally:
        ctx.close()
    selected = pq.read_table(run / "refine.parquet").to_pylist()
    versions = pq.read_table(run / "refine-rounds.parquet").to_pylist()
    return metrics, selected, versions


def by_marker(rows: list[dict]) -> dict[str, dict]:
    return {r["text"].split(":")[0]: r for r in rows}


def test_judge_retries_overrides_and_round_counts(tmp_path):
    with ScriptedServer(rules()) as server:
        metrics, selected, versions = run_refine(tmp_path / "run", server.url)
        assert not server.unmatched
        v = by_marker(versions)
        # malformed once, then valid on a new sample index
        assert v["ALPHA"]["judge_attempts"] == 2 and v["ALPHA"]["score"] == 9.25 and v["ALPHA"]["judge_error"] is None
        assert server.count("strict grader", "ALPHA") == 2
        # malformed every time: a recorded judge failure, not a crash; the verifier still accepts the sample
        assert v["BRAVO"]["score"] is None and v["BRAVO"]["judge_attempts"] == 3
        assert "critique" in v["BRAVO"]["judge_error"] and v["BRAVO"]["outcome"] == "passed"
        # the verifier overrides the judge both ways
        assert v["CHARLIE"]["correct"] is False and v["CHARLIE"]["judge_overridden"] and v["CHARLIE"]["score"] == 7.75
        assert v["CHARLIE"]["outcome"] == "rewritten"
        assert v["DELTA"]["judge_overridden"] and v["DELTA"]["score"] == 9.25 and v["DELTA"]["outcome"] == "passed"
        assert server.count("earlier attempt", "DELTA") == 0
        # lineage: every round kept with its parent and scores
        assert v["CHARLIE-FIXED"]["parent"] == v["CHARLIE"]["id"] and v["CHARLIE-FIXED"]["round"] == 1
        assert v["CHARLIE-FIXED"]["correct"] is True and v["ECHO-BROKEN"]["correct"] is False
        assert json.loads(v["ECHO"]["scores"]) == {"correctness": 10, "completeness": 5, "clarity": 5, "arithmetic": 5}
        assert v["ECHO"]["feedback"] == "explain why you add"
        round1 = metrics["rounds"][1]
        assert (round1["fixed"], round1["broke"], round1["left_wrong"], round1["repaired_share"]) == (1, 1, 0, 1.0)
        assert metrics["accepted_before"] == 4 and metrics["accepted"] == 5 and metrics["samples"] == 5
        # the best version of each lineage goes on: the fix, and the original rather than the broken rewrite
        chosen = by_marker(selected)
        assert set(chosen) == {"ALPHA", "BRAVO", "CHARLIE-FIXED", "DELTA", "ECHO"}
        assert sum(r["selected"] for r in versions) == 5 and len(versions) == 7
        assert len(server.requests) == 12


def test_wrong_sample_gets_hint_never_gold_unless_asked(tmp_path):
    with ScriptedServer(rules()) as server:
        run_refine(tmp_path / "hidden", server.url)
        (rewrite,) = [b for b in server.requests if "earlier attempt" in json.dumps(b) and "CHARLIE" in json.dumps(b)]
        prompt = "\n".join(m["content"] for m in rewrite["messages"])
        assert HINT_WRONG in prompt and "7" not in prompt and "perfect work" in prompt

        run_refine(tmp_path / "revealed", server.url, reveal_gold=True)
        revealed = [b for b in server.requests if "earlier attempt" in json.dumps(b) and "CHARLIE" in json.dumps(b)]
        assert "The correct final answer is 7" in revealed[-1]["messages"][-1]["content"]


def test_rerun_sends_no_new_requests(tmp_path):
    with ScriptedServer(rules()) as server:
        first, selected, versions = run_refine(tmp_path / "run", server.url)
        sent = len(server.requests)
        assert first["sent"] == sent
        again, selected2, versions2 = run_refine(tmp_path / "run", server.url)
        assert len(server.requests) == sent and again["sent"] == 0
        assert selected2 == selected and versions2 == versions


@pytest.mark.parametrize("critique", [False])
def test_verifier_only_repair_needs_no_judge(tmp_path, critique):
    with ScriptedServer(rules()) as server:
        metrics, selected, versions = run_refine(tmp_path / "run", server.url, critique=critique)
        assert server.count("strict grader") == 0
        assert server.count("earlier attempt") == 1  # only the wrong sample
        assert metrics["rounds"][1]["fixed"] == 1 and metrics["accepted"] == 5


def test_cli_refines_a_samples_file(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    samples = tmp_path / "samples.jsonl"
    samples.write_text("\n".join(
        json.dumps(Sample(id=f"p1#t#{i}", problem_id="p1", question=QUESTION, gold="7", teacher="t", model="m",
                          sample_index=i, prompt_key="cot", request_key=f"k{i}", text=TEXTS[m]).to_row())
        for i, m in enumerate(["CHARLIE", "DELTA"])
    ))
    with ScriptedServer(rules()) as server:
        args = ["refine", str(samples), "-o", str(tmp_path / "out"), "--backend", "openai", "--model", "scripted",
                "--base-url", server.url, "--keyless", "--rounds", "1"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "2 of 2 samples correct after refinement (was 1)" in result.output
        assert "refine rounds" in result.output and len(server.requests) == 4
    rounds = pq.read_table(tmp_path / "out" / "refine-rounds.parquet").to_pylist()
    assert {r["text"].split(":")[0] for r in rounds} == {"CHARLIE", "DELTA", "CHARLIE-FIXED"}


def test_undecided_sample_is_repaired_with_its_own_hint_and_only_wrong_skips_the_rest(tmp_path):
    from mathforge.refine.prompts import HINT_NO_ANSWER

    extra = [Rule(["strict grader", "FOXTROT-FIXED"], [scores(9, 9)]),
             Rule(["strict grader", "FOXTROT"], [scores(3, 3, "finish the sum")]),
             Rule(["earlier attempt", "FOXTROT"], ["FOXTROT-FIXED: 4 + 3 = 7. The answer is 7."])]
    with ScriptedServer(extra + rules()) as server:
        ctx = make_ctx(tmp_path / "run", server.url)
        rows = [Sample(id=f"p1#t#{i}", problem_id="p1", question=QUESTION, gold="7", teacher="t", model="m",
                       sample_index=i, prompt_key="cot", request_key=f"k{i}", text=text).to_row()
                for i, text in enumerate(["FOXTROT: Tom has some apples", TEXTS["ALPHA"]])]
        rows[0].update(method="timeout", reason="symbolic check ran past 5s")  # verified, but undecided
        ctx.write_samples("verified", rows)
        metrics = RefineStage().run(ctx, RefineConfig(max_rounds=2, only_wrong=True))
        ctx.close()
        (rewrite,) = [b for b in server.requests if "earlier attempt" in json.dumps(b)]
        assert HINT_NO_ANSWER in rewrite["messages"][-1]["content"] and "finish the sum" in json.dumps(rewrite)
        assert not server.unmatched
        assert server.count("strict grader", "ALPHA") == 0  # verified correct: left alone, unjudged
        assert metrics["rounds"][0]["no_answer"] == 1 and metrics["rounds"][1]["fixed"] == 1
        assert metrics["outcomes"] == {"kept": 1, "rewritten": 1, "passed": 1}
