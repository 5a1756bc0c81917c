"""LoRA training of the real SmolLM2-135M on CPU: masking, overfitting, the saved adapter, resume, the recipe stage."""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_smollm2

pytestmark = [requires_smollm2, pytest.mark.slow]

FACTS = [("What is 2 + 3?", "2 + 3 = 5. The answer is 5."), ("What is 4 + 7?", "4 + 7 = 11. The answer is 11."),
         ("What is 10 + 5?", "10 + 5 = 15. The answer is 15."), ("What is 6 + 6?", "6 + 6 = 12. The answer is 12.")]
SYSTEM = "You are a careful math tutor."


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory):
    """The embedded GGUF saved once as a plain transformers directory: later loads take 0.2 s instead of ~15 s."""
    from mathforge.backends.models import resolve_model
    from mathforge.train.model import load_student
    from mathforge.train.config import TrainConfig

    out = tmp_path_factory.mktemp("smollm2-hf")
    tok, model, _ = load_student(TrainConfig(model="smollm2", method="lora"), "cpu", "fp32")
    assert resolve_model("smollm2").gguf_file  # the GGUF path itself was exercised above
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return str(out)


@pytest.fixture
def data_file(tmp_path):
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in FACTS]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tiny(smol_dir: str, data: str, out, **kw):
    from mathforge.train.config import TrainConfig

    base = dict(model=smol_dir, data=data, output_dir=str(out), method="lora", lora_r=8, lora_alpha=16,
                lora_dropout=0.0, learning_rate=3e-3, lr_scheduler="constant", warmup_ratio=0.0, batch_size=4,
                grad_accum=1, max_steps=4, max_seq_length=96, gradient_checkpointing=False, logging_steps=1,
                save_steps=4, threads=1)  # one thread: far faster than two on a shared CI machine
    return TrainConfig(**(base | kw))


def trained_tokens(smol_dir, data_file, tmp_path, template=None):
    """What the trainer puts in the loss for the first chat, decoded, and the masking it chose."""
    from mathforge.train.data import load_splits
    from mathforge.train.model import load_student
    from mathforge.train.sft import _make_trainer, choose_masking

    cfg = tiny(smol_dir, data_file, tmp_path / "m")
    tok, model, _ = load_student(cfg, "cpu", "fp32")
    if template:
        tok.chat_template = template
    masking = choose_masking(tok, "assistant")
    trainer = _make_trainer(cfg, tok, model, load_splits(data_file), masking, tmp_path / "m", "cpu", "fp32", 0, [])
    ids = trainer.train_dataset[0]["input_ids"]
    labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    return masking, tok.decode([i for i, lab in zip(ids, labels) if lab != -100]), tok.decode(ids)


def test_loss_only_on_the_assistant_reply_with_smollm2_chatml(smol_dir, data_file, tmp_path):
    masking, trained, full = trained_tokens(smol_dir, data_file, tmp_path)
    assert masking == "completion_only_loss"  # SmolLM2's template has no {% generation %} markers
    assert trained == "2 + 3 = 5. The answer is 5.<|im_end|>\n"  # the reply and the end-of-turn token, nothing else
    assert full.startswith("<|im_start|>system\n" + SYSTEM) and "What is 2 + 3?" in full


def test_assistant_only_loss_when_trl_knows_the_template(smol_dir, data_file, tmp_path):
    from importlib.resources import files

    qwen = (files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    masking, trained, _ = trained_tokens(smol_dir, data_file, tmp_path, template=qwen)
    assert masking == "assistant_only_loss"
    assert trained.strip() == "2 + 3 = 5. The answer is 5.<|im_end|>"


def test_lora_overfits_and_the_adapter_loads_and_generates(smol_dir, data_file, tmp_path, capfd):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathforge.train.logs import read_log_history
    from mathforge.train.sft import train

    m = train(tiny(smol_dir, data_file, tmp_path / "run", merge=True))
    printed = capfd.readouterr()
    # stderr is not a terminal here: plain per-log lines, no tqdm bar redrawn into the log
    assert "it/s]" not in printed.err + printed.out and "s/it]" not in printed.err + printed.out
    assert "Tokenizing train dataset" not in printed.err + printed.out
    assert "'loss'" in printed.err + printed.out
    losses = [r["loss"] for r in read_log_history(tmp_path / "run") if "loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0], losses
    assert all("learning_rate" in r for r in read_log_history(tmp_path / "run") if "loss" in r)
    assert m["global_step"] == 4 and m["masking"] == "completion_only_loss" and m["tokens_seen"] > 0

    adapter = tmp_path / "run" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "mathforge.json"} <= {
        p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "mathforge.json").read_text())["base_model"] == smol_dir
    tok = AutoTokenizer.from_pretrained(str(adapter))
    student = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smol_dir), str(adapter)).eval()
    prompt = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": FACTS[0][0]}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = student.generate(**prompt, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.startswith("2 + 3 = 5"), reply  # it learnt the training reply

    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "merged")).eval()
    with torch.no_grad():
        again = merged.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(again, out)  # merging changes nothing the model says


def test_resume_continues_the_step_count(smol_dir, data_file, tmp_path):
    from transformers import TrainerCallback

    from mathforge.errors import ConfigError
    from mathforge.train.logs import read_log_history
    from mathforge.train.sft import train

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt  # as if the machine went away right after checkpoint-2

    cfg = tiny(smol_dir, data_file, tmp_path / "run", save_steps=2, batch_size=2, learning_rate=1e-3, packing=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "run" / "adapter").exists()

    m = train(cfg)
    assert m["resumed_from"].endswith("checkpoint-2") and m["global_step"] == 4
    steps = [r["step"] for r in read_log_history(tmp_path / "run") if "loss" in r]
    assert steps == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's state, 3-4 were trained now

    assert train(cfg)["cached"] is True  # a finished run with the same config and data is not redone
    (tmp_path / "run" / "metrics.json").unlink()  # forget the finished run: its checkpoints are looked at
    with pytest.raises(ConfigError, match=r"different settings \(learning_rate\).*resume: false"):
        train(cfg.model_copy(update={"learning_rate": 2e-3}))


def test_smoke_recipe_runs_the_whole_loop(smol_dir, tmp_path, monkeypatch):
    """distill-smoke end to end (teacher → verify → curate → export → train → eval), the model swapped for the
    converted copy of the same SmolLM2 so that it loads in a fraction of a second."""
    from mathforge.config import load_yaml
    from mathforge.pipeline.recipe import parse_recipe, resolve_recipe_path, run_recipe
    from mathforge.train.logs import read_log_history

    path = resolve_recipe_path("distill-smoke")
    data = load_yaml(path.read_text(), str(path))
    data["teachers"]["smollm2"]["model"] = smol_dir
    stages = {next(iter(s)): next(iter(s.values())) for s in data["stages"]}
    stages["generate"]["max_tokens"] = stages["eval"]["max_tokens"] = 32
    stages["train"]["model"] = smol_dir
    stages["train"]["threads"] = 1
    stages["eval"]["models"] = ["smollm2"]  # the recipe's teacher, i.e. the converted copy
    monkeypatch.chdir(tmp_path)  # the run directory defaults to runs/<name> under the working directory
    summary = run_recipe(parse_recipe(data, str(path)))

    run = tmp_path / "runs" / "distill-smoke"
    assert (run / "export" / "sft.jsonl").exists()
    assert json.loads((run / "train" / "metrics.json").read_text())["global_step"] == 3
    assert [r["step"] for r in read_log_history(run / "train") if "loss" in r] == [1, 2, 3]
    results = json.dumps(summary, default=str)
    assert "smollm2+adapter" in results, results[:2000]
    assert (run / "report").is_dir()
