"""The report of a real run (every stage, a priced OpenAI-compatible teacher on a scripted 127.0.0.1 server, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from tests.scripted_openai_server import Rule, ScriptedServer

PROBLEMS = [
    ("Tom has 4 apples and buys 3 more. How many apples does he have?", 7,
     ["4 + 3 = 7 apples.\nThe answer is 7.", "4 + 3 = 8.\nThe answer is 8.", "He has 4 and 3 more, 7.\nThe answer is 7."]),
    ("A box holds 6 pens. How many pens are in 2 boxes?", 12,
     ["6 * 2 = 12 pens.\nThe answer is 12.", "Two boxes of 6 make 12.\nThe answer is 12.", "6 + 6 = 13.\nThe answer is 13."]),
    ("Sara had 10 dollars and spent 4. How many dollars are left?", 6, ["I do not know."]),
]


def make_run(tmp: Path) -> tuple[Path, dict]:
    """A run directory made by every stage: load (with a bad row), generate, verify, curate, export, eval, report."""
    data = tmp / "gsm8k.jsonl"
    lines = [json.dumps({"question": q, "answer": f"...\n#### {a}"}) for q, a, _ in PROBLEMS]
    data.write_text("\n".join(lines + [json.dumps({"question": "No answer here"})]) + "\n")
    bench = tmp / "gsm8k-test.jsonl"  # an eval stops at a bad row rather than change the denominator
    bench.write_text("\n".join(lines) + "\n")
    with ScriptedServer([Rule([q[:20]], replies) for q, _, replies in PROBLEMS]) as server:
        teacher = {"backend": "openai", "model": "scripted", "base_url": server.url, "api_key_env": None,
                   "max_attempts": 1, "price_input_per_m": 1.0, "price_output_per_m": 2.0}
        recipe = {
            "name": "report-test",
            "teachers": {"api": teacher},
            "stages": [
                {"load": {"dataset": "gsm8k", "path": str(data), "on_bad_row": "skip"}},
                {"generate": {"k": 3, "max_tokens": 64}},
                {"verify": {}},
                {"curate": {"decontam": {"enabled": False}}},
                {"export": {}},
                {"eval": {"models": ["api"], "benchmarks": [{"name": "gsm8k", "path": str(bench)}], "k": 3}},
            ],
        }
        run = tmp / "run"
        summary = run_recipe(parse_recipe(recipe), run)
    return run, summary


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))[0]


def not_blank(png: Path) -> bool:
    img = imread(str(png))
    return png.stat().st_size > 2000 and float(img[..., :3].std()) > 0.02


def test_report_html_plots_markdown_and_metrics(run, tmp_path):
    from mathforge.report import build_report

    out = tmp_path / "report"
    metrics = build_report([run], out)
    assert sorted(metrics["plots"]) == sorted(f"{p}.png" for p in
                                             ("accuracy", "funnel", "usage", "throughput", "agreement", "lengths"))
    for name in metrics["plots"]:
        assert not_blank(out / name), name
    html = (out / "index.html").read_text()
    for part in ('id="runs"', 'id="eval"', 'id="funnel"', 'id="usage"', 'id="rejected"', 'src="accuracy.png"'):
        assert part in html, part
    assert "missing or empty" in html and "does not match gold" in html  # load and curate rejects, with reasons

    funnel = metrics["runs"][0]["funnel"]
    assert funnel["generated"] == 9 and funnel["verified"] == 4  # 2 + 2 correct samples of 3 problems
    assert funnel["exported"] == funnel["curated"] <= funnel["verified"]
    usage = metrics["runs"][0]["usage"]["api"]
    assert usage["requests"] == 9 + 3 * 4  # generate + eval (greedy + 3 samples per problem)
    assert usage["calls"] == 21 and usage["abandoned"] == 0 and usage["calls_per_answer"] == 1.0  # each paid once
    assert usage["cost"] == pytest.approx((usage["tokens_in"] * 1.0 + usage["tokens_out"] * 2.0) / 1e6)

    md = (out / "summary.md").read_text().splitlines()
    assert md[0].startswith("# mathforge report")
    assert "| run | problems | samples | accepted |" in md[2]
    table = [line for line in md if line.startswith("| api | gsm8k | 3 |")]
    assert len(table) == 1 and table[0].endswith("| base |")
    assert "![accuracy](accuracy.png)" in md
    assert "| teacher | requests | calls | abandoned | calls per kept answer |" in "\n".join(md)


def test_report_cli_compares_two_runs(run, tmp_path):
    from mathforge.cli.report import app

    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, [str(run), str(run), "--out", str(out), "--title", "two runs"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "eval comparison" in result.output
    assert "<title>two runs</title>" in (out / "index.html").read_text()
    assert not_blank(out / "funnel.png")
    assert CliRunner().invoke(app, [str(tmp_path / "missing")]).exit_code != 0


def test_report_shows_synthesised_sets_side_by_side(run, tmp_path):
    import shutil

    from mathforge.report import build_report

    plain = build_report([run], tmp_path / "plain")
    assert plain["synth_compare"] == {} and "Synthesised" not in (tmp_path / "plain" / "summary.md").read_text()
    copy = shutil.copytree(run, tmp_path / "synth-run")
    sets = {"teacher": {"problems": 4, "acceptance": 0.5, "solve_rate": 0.25, "teacher_requests_per_problem": 5.0},
            "distilled": {"problems": 6, "acceptance": 0.75, "solve_rate": None, "teacher_requests_per_problem": 3.2}}
    (copy / "synth_compare.json").write_text(json.dumps(sets))
    metrics = build_report([copy], tmp_path / "synth")
    assert metrics["synth_compare"] == {"synth_compare": sets}
    md = (tmp_path / "synth" / "summary.md").read_text()
    assert "## Synthesised problem sets" in md and "| metric | teacher | distilled |" in md
    assert "| acceptance | 0.5 | 0.75 |" in md and "| solve_rate | 0.25 | - |" in md
    assert '<table class="synth">' in (tmp_path / "synth" / "index.html").read_text()
