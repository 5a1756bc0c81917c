"""`mathforge eval`'s flags are generated from EvalConfig; `-o/--out` is the directory a command writes into."""

from __future__ import annotations

import json
import typing

import pytest
import yaml
from typer.testing import CliRunner

from mathforge.cli.flags import config_parameters
from mathforge.cli.main import app
from mathforge.evaluate.config import EvalConfig

SPECIAL = {("verify", "extractors"): ["boxed", "final-answer"], ("verify", "sandbox"): "bwrap",
           ("greedy",): False, ("k",): 3, ("limit",): 4}


class Stop(Exception):
    """Raised by the stand-in run_eval once it has the config: the test needs the config, not an evaluation."""


@pytest.fixture
def captured(monkeypatch):
    got: list[EvalConfig] = []

    def fake_run_eval(ctx, cfg, out):
        got.append(cfg)
        raise Stop

    monkeypatch.setattr("mathforge.evaluate.run_eval", fake_run_eval)
    return got


def _value(path: tuple[str, ...], annotation) -> object:
    if path in SPECIAL:
        return SPECIAL[path]
    inner = [a for a in typing.get_args(annotation) if a is not type(None)][0]
    return {int: 7, float: 0.5, str: f"v-{'-'.join(path)}"}[inner]


def _flags() -> list[tuple[tuple[str, ...], str, object]]:
    out = []
    for path, param in config_parameters(EvalConfig):
        decl = param.default.param_decls[0]
        out.append((path, decl.split("/")[0], _value(path, param.annotation)))
    return out


def _args(flags) -> list[str]:
    args = []
    for _, flag, value in flags:
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


def _get(cfg: EvalConfig, path: tuple[str, ...]) -> object:
    node: object = cfg
    for key in path:
        node = getattr(node, key)
    return node


def test_every_scalar_field_is_a_flag_and_round_trips_with_the_config_file(tmp_path, captured):
    flags = _flags()
    names = {path for path, _, _ in flags}
    every = {(k,) for k in EvalConfig.model_fields} - {("verify",)} | {("verify", k) for k in
                                                                          EvalConfig.model_fields["verify"].annotation.model_fields}
    # the three fields that hold names or records have shorthand flags instead (checked below)
    assert every - names == {("models",), ("adapters",), ("benchmarks",)}
    help_text = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "300"}).output
    for _, flag, _ in flags:
        assert flag in help_text

    base = ["eval", "-m", "smollm2", "-b", "gsm8k,svamp", "-o", str(tmp_path / "r")]
    res = CliRunner().invoke(app, [*base, *_args(flags)])
    assert isinstance(res.exception, Stop), res.output
    by_flags = captured[-1]
    for path, flag, value in flags:
        assert _get(by_flags, path) == value, flag
    assert list(by_flags.models) == ["smollm2"] and [b.name for b in by_flags.benchmarks] == ["gsm8k", "svamp"]
    assert by_flags.benchmarks[1].split is None  # SVAMP's single file, as a recipe gets it

    data: dict = {"models": ["smollm2"], "benchmarks": ["gsm8k", "svamp"]}
    for path, _, value in flags:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["eval", "--config", str(cfg_file), "--run-dir", str(tmp_path / "r2")])
    assert isinstance(res.exception, Stop), res.output
    from_file = captured[-1]
    assert from_file.model_dump() == {**by_flags.model_dump(), "models": ["smollm2"]}

    res = CliRunner().invoke(app, ["eval", "--config", str(cfg_file), "-o", str(tmp_path / "r3"), "--k", "5",
                                   "--greedy"])
    assert isinstance(res.exception, Stop), res.output
    assert captured[-1].k == 5 and captured[-1].greedy is True and captured[-1].top_p == 0.5  # flags over the file


def test_unknown_flag_and_unknown_config_key_are_clear_errors(tmp_path, captured):
    res = CliRunner().invoke(app, ["eval", "-m", "smollm2", "-b", "gsm8k", "--tempreature", "0.5"])
    assert res.exit_code == 2 and "No such option: --tempreature" in res.output
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(yaml.safe_dump({"models": ["smollm2"], "benchmarks": ["gsm8k"], "tempreature": 0.5}))
    res = CliRunner().invoke(app, ["eval", "--config", str(cfg_file)])
    assert res.exit_code != 0 and "tempreature" in res.output and not captured
    res = CliRunner().invoke(app, ["eval", "-m", "smollm2", "-b", "gsm8k", "--no-greedy"])  # k = 1: nothing to score
    assert res.exit_code != 0 and "greedy" in res.output and not captured


@pytest.mark.parametrize("command", [["run", "quickstart"], ["eval", "-m", "smollm2", "-b", "gsm8k"],
                                     ["generate", "SOURCE"], ["curate", "SOURCE"], ["export", "SOURCE"],
                                     ["report", "SOURCE"], ["verify", "SOURCE"], ["select", "SOURCE"],
                                     ["refine", "SOURCE"]])
def test_out_is_a_directory_on_every_command(tmp_path, command):
    """`-o FILE` is refused before anything runs, by every command that has `-o`; its help says directory/folder."""
    source = tmp_path / "samples.jsonl"
    source.write_text('{"id": "s", "problem_id": "p", "question": "q", "text": "t", "gold": "1"}\n')
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    args = [str(source) if a == "SOURCE" else a for a in command]
    res = CliRunner().invoke(app, [*args, "-o", str(a_file)], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "is a file" in res.output, res.output
    assert a_file.read_text() == "x"
    help_text = CliRunner().invoke(app, [command[0], "--help"], env={"COLUMNS": "300"}).output
    line = next(ln for ln in help_text.splitlines() if "--out" in ln)
    assert "director" in line or "folder" in line, line


def test_verify_writes_into_the_out_folder_or_the_output_file(tmp_path):
    source = tmp_path / "samples.jsonl"
    source.write_text('{"id": "s", "problem_id": "p", "question": "q", "text": "so #### 12", "gold": "12"}\n')
    res = CliRunner().invoke(app, ["verify", str(source), "-o", str(tmp_path / "checked"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "checked" / "samples.verified.jsonl").read_text().splitlines()]
    assert rows[0]["correct"] is True
    res = CliRunner().invoke(app, ["verify", str(source), "--output", str(tmp_path / "v.jsonl"), "--workers", "1"])
    assert res.exit_code == 0 and (tmp_path / "v.jsonl").exists(), res.output
    res = CliRunner().invoke(app, ["verify", str(source), "-o", str(tmp_path), "--output", str(tmp_path / "w.jsonl")])
    assert res.exit_code == 2 and "not both" in res.output
