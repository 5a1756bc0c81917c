"""Training without a model: config validation, data discovery, reference rows, recipes and the CLI's flags."""

from __future__ import annotations

import json

import pytest

from mathforge.config import validate
from mathforge.errors import ConfigError, DataError
from mathforge.records import Problem
from mathforge.train.config import TrainConfig
from mathforge.train.data import fingerprint, load_splits, locate, to_prompt_completion
from mathforge.train.reference import ReferenceSFTConfig, reference_samples, reference_text


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_defaults_are_the_seed_configuration():
    cfg = TrainConfig(model="m")
    assert (cfg.method, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == ("qlora", 64, 128, 0.08)
    assert (cfg.learning_rate, cfg.lr_scheduler, cfg.warmup_ratio, cfg.optim) == (1e-5, "cosine", 0.1, "adamw_torch")
    assert (cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.quant_type) == (4, 4, 2.0, "nf4")


def test_unknown_and_bad_keys_are_errors():
    with pytest.raises(ConfigError, match=r"unknown key 'lora_rank' \(did you mean 'lora_r'\?\)"):
        validate(TrainConfig, {"model": "m", "lora_rank": 8}, "recipe")
    with pytest.raises(ConfigError, match="method"):
        validate(TrainConfig, {"model": "m", "method": "dora"}, "recipe")
    with pytest.raises(ConfigError, match="model: required key is missing"):
        validate(TrainConfig, {}, "recipe")


def test_qlora_without_cuda_is_a_clear_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from mathforge.train.sft import train

    write_jsonl(tmp_path / "d.jsonl", [chat("q", "a")])
    cfg = TrainConfig(model="does-not-matter", data=str(tmp_path / "d.jsonl"), output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="'qlora'.*needs a CUDA GPU.*use method: lora"):
        train(cfg)
    assert not (tmp_path / "o").exists()  # refused before loading anything


def test_locate_run_export_splits_and_files(tmp_path):
    write_jsonl(tmp_path / "run" / "export" / "sft.jsonl", [chat("q", "a")])
    assert locate(tmp_path / "run") == {"train": tmp_path / "run" / "export" / "sft.jsonl"}
    write_jsonl(tmp_path / "run" / "export" / "train.jsonl", [chat("q1", "a1"), chat("q2", "a2")])
    write_jsonl(tmp_path / "run" / "export" / "validation.jsonl", [chat("q3", "a3")])
    splits = load_splits(tmp_path / "run")
    assert [len(splits["train"]), len(splits["validation"])] == [2, 1]
    assert len(load_splits(tmp_path / "run", limit=1)["train"]) == 1
    with pytest.raises(ConfigError, match="no training data"):
        locate(tmp_path)


def test_saved_datasetdict_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([chat("q", "a")] * 3),
                               "validation": datasets.Dataset.from_list([chat("v", "w")])})
    dd.save_to_disk(str(tmp_path / "dd"))
    splits = load_splits(tmp_path / "dd")
    assert len(splits["train"]) == 3 and splits["validation"][0]["messages"][0]["content"] == "v"
    dd["train"].to_parquet(str(tmp_path / "t.parquet"))
    assert len(load_splits(tmp_path / "t.parquet")["train"]) == 3


def test_bad_rows_name_file_and_line(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [chat("q", "a"), {"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(DataError, match=r"d.jsonl, line 2, field 'messages': the chat must end with an assistant"):
        load_splits(tmp_path / "d.jsonl")
    write_jsonl(tmp_path / "e.jsonl", [{"text": "plain"}])
    with pytest.raises(DataError, match="line 1.*non-empty 'messages'"):
        load_splits(tmp_path / "e.jsonl")


def test_prompt_completion_split_and_fingerprint():
    row = {"messages": [{"role": "system", "content": "s"}, *chat("q", "a")["messages"]]}
    pc = to_prompt_completion(row)
    assert [m["role"] for m in pc["prompt"]] == ["system", "user"] and pc["completion"][0]["content"] == "a"
    assert fingerprint({"train": [row]}) != fingerprint({"train": [chat("q", "b")]})


def test_reference_samples_reshape_gsm8k_solutions(tmp_path):
    from mathforge.export import export

    sol = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    probs = [Problem(f"g/{i}", f"How many clips {i}?", "72", sol, "gsm8k") for i in range(4)]
    probs.append(Problem("g/9", "No reference?", "1"))
    cfg = validate(ReferenceSFTConfig, {"export": {"system_prompt": "Be careful.", "validation_fraction": 0.25,
                                                   "formats": ["jsonl"]}}, "test")
    samples, rejected = reference_samples(probs, cfg)
    assert samples[0]["text"] == "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72.\nThe answer is 72."
    assert [reason for _, reason in rejected] == ["no reference solution"]
    assert reference_text(probs[0], ReferenceSFTConfig(strip_calculator=False, final_answer=None)) == sol

    export(samples, tmp_path / "run" / "export", cfg.export)  # what the stage does with them
    splits = load_splits(tmp_path / "run")
    assert (len(splits["train"]), len(splits["validation"])) == (3, 1)
    assert splits["train"][0]["messages"][0] == {"role": "system", "content": "Be careful."}


def test_export_layout_is_found_with_its_splits(tmp_path):
    from mathforge.export import ExportConfig, export

    samples = [{"id": f"s{i}", "problem_id": f"p{i}", "question": f"q{i}", "text": f"a{i}", "teacher": "t",
                "model": "m", "correct": True} for i in range(10)]
    for formats, expect in ((["jsonl"], "chat"), (["parquet"], "chat"), (["dataset"], "dataset")):
        out = tmp_path / "-".join(formats)
        export(samples, out / "export", ExportConfig(formats=formats, validation_fraction=0.2, card=False))
        assert expect in str(next(iter(locate(out).values())))
        splits = load_splits(out)
        assert (len(splits["train"]), len(splits["validation"])) == (8, 2)
    flat = load_splits(tmp_path / "jsonl" / "export" / "sft.jsonl")  # one file, split column honoured
    assert (len(flat["train"]), len(flat["validation"])) == (8, 2)


@pytest.mark.parametrize("name", ["distill-gsm8k", "distill-gsm8k-control", "distill-smoke"])
def test_bundled_recipes_validate(name):
    from mathforge.pipeline.recipe import load_recipe

    recipe = load_recipe(name)
    stages = {n: cfg for n, _, cfg in recipe.stages}
    assert {"train", "eval", "report"} <= set(stages)
    assert stages["train"].method in ("lora", "qlora")


def test_gpu_recipes_keep_the_seed_hyperparameters():
    from mathforge.pipeline.recipe import load_recipe

    for name in ("distill-gsm8k", "distill-gsm8k-control"):
        train = {n: c for n, _, c in load_recipe(name).stages}["train"]
        seed = TrainConfig(model=train.model)
        assert train.fingerprinted() == seed.fingerprinted(), name


def test_cli_flags_override_the_config_file(tmp_path):
    from mathforge.cli.train import build_config

    (tmp_path / "t.yaml").write_text("model: smollm2\nmethod: lora\nlora_r: 8\n")
    write_jsonl(tmp_path / "run" / "export" / "sft.jsonl", [chat("q", "a")])
    cfg = build_config({"data": str(tmp_path / "run"), "lora_r": 16, "packing": None, "report_to": []},
                       tmp_path / "t.yaml")
    assert (cfg.model, cfg.method, cfg.lora_r, cfg.packing) == ("smollm2", "lora", 16, False)
    assert cfg.output_dir == str(tmp_path / "run" / "train")  # a run's outputs join that run
    with pytest.raises(ConfigError, match="--out"):
        build_config({"data": str(tmp_path / "run" / "export" / "sft.jsonl"), "model": "m"})


def test_output_dir_that_is_a_file_is_refused_from_flag_config_and_python(tmp_path):
    """`train -o FILE` is refused by the flag's own check (like every other `-o`); a file named in --config or in
    a TrainConfig is refused by train() before anything loads. The file is left as it was."""
    from typer.testing import CliRunner

    from mathforge.cli.main import app
    from mathforge.train.sft import train

    write_jsonl(tmp_path / "sft.jsonl", [chat("q", "a")])
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    res = CliRunner().invoke(app, ["train", str(tmp_path / "sft.jsonl"), "-m", "smollm2", "-o", str(taken)],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "is a file" in res.output, res.output
    (tmp_path / "t.yaml").write_text(f"model: smollm2\noutput_dir: {taken}\n")
    res = CliRunner().invoke(app, ["train", str(tmp_path / "sft.jsonl"), "--config", str(tmp_path / "t.yaml")],
                             env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "is a file" in res.output and str(taken) in res.output, res.output
    with pytest.raises(ConfigError, match="is a file"):
        train(TrainConfig(model="smollm2", data=str(tmp_path / "sft.jsonl"), output_dir=str(taken)))
    assert taken.read_text() == "x"
    help_line = next(ln for ln in CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"})
                     .output.splitlines() if "--out" in ln)
    assert "director" in help_line, help_line


def test_cli_has_a_flag_for_every_field():
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    for name in TrainConfig.model_fields:
        if name not in ("data", "trainer_args"):
            assert "--" + name.replace("_", "-") in out, name


def test_a_field_added_later_keeps_old_fingerprints_at_its_default():
    from mathforge.train.config import LATER_FIELDS

    cfg = TrainConfig(model="smollm2", data="d.jsonl", output_dir="o")
    before = cfg.fingerprinted()  # what a run made before num_processes existed recorded
    assert not set(LATER_FIELDS) & set(before)
    two = TrainConfig(model="smollm2", data="d.jsonl", output_dir="o", num_processes=2)
    assert two.fingerprinted()["num_processes"] == 2
    assert two.fingerprinted() != before
