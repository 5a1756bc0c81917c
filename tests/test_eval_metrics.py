"""Eval metrics without a model: pass@k against brute force, Wilson and bootstrap intervals, maj@k, breakdowns, deltas."""

from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest

from mathforge.evaluate.compare import comparison_rows, markdown_table
from mathforge.evaluate.config import EvalConfig
from mathforge.evaluate.metrics import (
    ProblemOutcome, bootstrap_interval, breakdown, ks_for, paired_delta, pass_at_k, summarize, wilson_interval,
)
from mathforge.evaluate.runner import outcomes_for
from mathforge.errors import ConfigError
from mathforge.config import validate
from mathforge.records import Problem


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of the n samples that hold at least one correct one."""
    flags = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_brute_force_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(200, 0, 10) == 0.0
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer wrong samples than k: a correct one is always drawn
    assert 0.0 < pass_at_k(1000, 1, 500) < 1.0  # large n stays finite
    for bad in [(3, 4, 1), (3, 1, 0), (3, 1, 4)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 0.0, 0.5] * 5
    a, b = bootstrap_interval(values, seed=3), bootstrap_interval(values, seed=3)
    assert a == b
    assert a[0] < sum(values) / len(values) < a[1]
    assert bootstrap_interval([0.5] * 10) == (0.5, 0.5)
    wide, narrow = bootstrap_interval(values[:8]), bootstrap_interval(values * 10)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_paired_delta_sees_a_consistent_gain():
    base = [0, 1, 0, 1, 0, 0, 1, 0] * 10
    student = [1, 1, 0, 1, 1, 0, 1, 0] * 10  # wins 2 of 8, loses none
    d = paired_delta(student, base)
    assert d["delta"] == pytest.approx(0.25) and d["n"] == 80
    assert 0 < d["ci_low"] < 0.25 < d["ci_high"]


def test_summarize_greedy_majority_and_pass_at_k():
    outcomes = [
        ProblemOutcome("a", greedy=True, sampled=[True, False, False, False], majority=False),
        ProblemOutcome("b", greedy=False, sampled=[True, True, True, False], majority=True),
        ProblemOutcome("c", greedy=False, sampled=[False] * 4, majority=False),
    ]
    m = summarize(outcomes)
    assert set(m) == {"greedy", "maj@4", "mean_pass@1", "pass@2", "pass@4"}
    assert m["greedy"]["value"] == pytest.approx(1 / 3) and m["greedy"]["interval"] == "wilson"
    assert m["maj@4"]["value"] == pytest.approx(1 / 3)
    assert m["mean_pass@1"]["value"] == pytest.approx((0.25 + 0.75 + 0) / 3)
    assert m["pass@2"]["value"] == pytest.approx((pass_at_k(4, 1, 2) + pass_at_k(4, 3, 2)) / 3)
    assert m["pass@4"]["value"] == pytest.approx(2 / 3) and m["pass@4"]["n"] == 3
    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


def test_breakdown_by_level_and_subject():
    outcomes = [
        ProblemOutcome("1", greedy=True, groups={"level": 1, "subject": "Algebra"}),
        ProblemOutcome("2", greedy=False, groups={"level": 1, "subject": "Geometry"}),
        ProblemOutcome("3", greedy=True, groups={"level": 5, "subject": "Algebra"}),
        ProblemOutcome("4", greedy=True, groups={"level": None, "subject": "Algebra"}),
    ]
    by_level = breakdown(outcomes, "level")
    assert list(by_level) == ["1", "5"]
    assert by_level["1"]["greedy"]["value"] == 0.5 and by_level["5"]["greedy"]["n"] == 1
    assert breakdown(outcomes, "subject")["Algebra"]["greedy"]["value"] == 1.0


def test_outcomes_majority_is_the_verdict_of_the_winning_answer():
    problems = [Problem("p1", "q1", "5"), Problem("p2", "q2", "7"), Problem("p3", "q3", "1")]

    def row(pid, i, ans, ok, mode="sampled"):
        return {"problem_id": pid, "mode": mode, "sample_index": i, "extracted": ans, "normalized": ans,
                "method": "numeric-exact", "correct": ok}

    rows = [
        row("p1", 0, "6", False), row("p1", 1, "5", True), row("p1", 2, "5.0", True), row("p1", 0, "5", True, "greedy"),
        row("p2", 0, "7", True), row("p2", 1, "8", False), row("p2", 2, "8", False),
        row("p3", 0, None, None), row("p3", 1, None, None), row("p3", 2, "1", True),
    ]
    out = {o.problem_id: o for o in outcomes_for(problems, rows, timeout=5)}
    assert out["p1"].majority is True and out["p1"].greedy is True and out["p1"].sampled == [False, True, True]
    assert out["p2"].majority is False and out["p2"].sampled == [True, False, False]
    assert out["p3"].majority is True  # the only answer given wins; blanks do not vote
    assert out["p2"].greedy is None  # no greedy answer was asked for


def test_eval_config_rejects_unknown_keys_and_empty_work():
    cfg = validate(EvalConfig, {"models": ["smollm2"], "benchmarks": ["gsm8k", "svamp", {"name": "math", "limit": 5}]}, "t")
    assert [b.split for b in cfg.benchmarks] == ["test", None, "test"] and cfg.benchmarks[2].limit == 5
    with pytest.raises(ConfigError, match="unknown key 'kk'"):
        validate(EvalConfig, {"models": ["m"], "benchmarks": ["gsm8k"], "kk": 3}, "t")
    with pytest.raises(ConfigError, match="nothing to score"):
        validate(EvalConfig, {"models": ["m"], "benchmarks": ["gsm8k"], "greedy": False}, "t")
    with pytest.raises(ConfigError, match="at least one benchmark"):
        validate(EvalConfig, {"models": ["m"], "benchmarks": []}, "t")


def _write_eval(folder, run_dir, models: dict[str, list[float]]) -> tuple:
    """A results.json and problems.parquet for models with the given per-problem greedy scores."""
    from mathforge.store import write_table

    folder.mkdir(parents=True)
    results, rows = [], []
    for model, scores in models.items():
        outcomes = [ProblemOutcome(f"p{i}", greedy=bool(s)) for i, s in enumerate(scores)]
        results.append({"model": model, "benchmark": "gsm8k", "problems": len(scores), "metrics": summarize(outcomes)})
        rows += [{"model": model, "benchmark": "gsm8k", "problem_id": f"p{i}", "greedy": float(s)} for i, s in enumerate(scores)]
    doc = {"kind": "mathforge-eval", "run_dir": str(run_dir), "base": next(iter(models)), "results": results}
    (folder / "results.json").write_text(json.dumps(doc))
    write_table(folder / "problems.parquet", rows)
    return folder, doc


def test_comparison_table_paired_delta_across_runs(tmp_path):
    base = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0] * 4
    student = [1, 1, 0, 1, 1, 1, 0, 0, 1, 0] * 4
    a = _write_eval(tmp_path / "base-run" / "eval", tmp_path / "base-run", {"base": base})
    b = _write_eval(tmp_path / "sft-run" / "eval", tmp_path / "sft-run", {"student": student})
    rows = comparison_rows([a, b], base="base")
    assert [r["model"] for r in rows] == ["base", "student"]
    delta = rows[1]["delta"]
    assert delta["paired"] and delta["delta"] == pytest.approx(0.2) and delta["n"] == 40
    md = markdown_table(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| run | model | benchmark | n | greedy |")
    assert lines[2] == "| base-run | base | gsm8k | 40 | 40.0 ± 14.5 | base |"
    assert lines[3].endswith(f"+20.0 [{100 * delta['ci_low']:+.1f}, {100 * delta['ci_high']:+.1f}] |")
    assert pq.read_table(a[0] / "problems.parquet").num_rows == 40


def test_wilson_interval_holds_the_proportion_exactly_at_the_edges():
    from mathforge.evaluate.metrics import wilson_interval

    for n in range(1, 40):
        low, high = wilson_interval(0, n)
        assert low == 0.0 < high
        low, high = wilson_interval(n, n)
        assert low < high == 1.0
