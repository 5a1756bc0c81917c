"""The bundled quickstart recipe end to end with a scripted teacher: the funnel names why samples were dropped, and
the export holds nothing that a later `mathforge curate` would reject."""

from __future__ import annotations

import json

from mathforge.curate import curate
from mathforge.pipeline.recipe import load_recipe, parse_recipe, run_recipe
from mathforge.store import read_rows
from mathforge.summary import funnel_line, print_summary
from tests.scripted_openai_server import Rule, ScriptedServer

# The first three problems of bundled:arith-train (gold 14, 18, 5); each prompt gets one reply, n times per call.
GOOD = "Emma has 7 + 7 = 14 shells now.\n#### 14"
WRONG_STEP = "Omar has 2 * 5 = 12 marbles in baskets, and 12 + 8 = 18 marbles in all.\n#### 18"
WRONG = "Ben has 13 - 8 = 6 apples left.\n#### 6"


def quickstart_with(url: str, tmp_path):
    data = json.loads(json.dumps(load_recipe("quickstart").effective()))  # the bundled recipe, as a plain mapping
    data["teachers"] = {"smollm2": {"backend": "openai", "model": "scripted", "base_url": url, "api_key_env": None}}
    data["run_dir"] = str(tmp_path / "run")
    for stage in data["stages"]:
        if "load" in stage:
            stage["load"]["limit"] = 3
    return parse_recipe(data)


def test_quickstart_curates_before_export_and_prints_the_funnel(tmp_path, capsys):
    rules = [Rule(["Emma has 7 shells"], [GOOD]), Rule(["Omar has 2 baskets"], [WRONG_STEP]),
             Rule(["Ben has 13 apples"], [WRONG])]
    recipe = load_recipe("quickstart")
    assert [name for name, _, _ in recipe.stages] == ["load", "generate", "verify", "curate", "export"]
    with ScriptedServer(rules) as server:
        summary = run_recipe(quickstart_with(server.url, tmp_path))
    f = summary["funnel"]
    # k=4 identical replies per prompt: 3 of each correct answer are duplicates; Omar's has a wrong step
    assert f == {"samples": 12, "dropped": {"duplicate": 6, "wrong answer": 4, "wrong step": 1}, "kept": 1}
    assert summary["accepted"] == 1
    print_summary(summary)
    assert "12 samples → duplicate 6, wrong answer 4, wrong step 1 → kept 1" in capsys.readouterr().out
    assert funnel_line(f) == "12 samples → duplicate 6, wrong answer 4, wrong step 1 → kept 1"

    run = tmp_path / "run"
    exported = [json.loads(line) for line in (run / "export" / "sft.jsonl").read_text().splitlines()]
    answers = [m["content"] for row in exported for m in row["messages"] if m["role"] == "assistant"]
    assert answers == [GOOD]
    # `mathforge curate` over what the quickstart kept drops nothing
    curated = read_rows(run / "curated.parquet")
    again = curate(curated, recipe.stages[3][2])
    assert again.rejected == [] and [r["text"] for r in again.kept] == answers
