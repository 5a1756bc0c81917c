"""Training on two processes (gloo, CPU) through ``accelerate launch``: one adapter, one log, a split of the data."""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_smollm2



def test_launch_command_and_no_credential_on_disk(tmp_path):
    from mathforge.errors import ConfigError
    from mathforge.train.config import TrainConfig
    from mathforge.train.launch import LAUNCH_FILE, command, launch

    cfg = TrainConfig(model="m", data="d", output_dir=str(tmp_path), num_processes=3, threads=1)
    cmd, env = command(cfg, "cpu", tmp_path / LAUNCH_FILE, seed=7)
    assert cmd[cmd.index("--num_processes") + 1] == "3" and cmd[-3:] == [
        "mathforge.train.launch", str(tmp_path / LAUNCH_FILE), "7"]
    assert cmd[cmd.index("--main_process_ip") + 1] == "127.0.0.1"
    assert int(cmd[cmd.index("--main_process_port") + 1]) > 0
    assert env["ACCELERATE_USE_CPU"] == "true" and env["OMP_NUM_THREADS"] == "1"
    secret = cfg.model_copy(update={"trainer_args": {"hub_token": "hf_" + "a1b2c3d4" * 5}})
    with pytest.raises(ConfigError, match="credential"):
        launch(secret, "cpu", 0)
    assert not (tmp_path / LAUNCH_FILE).exists()  # refused before anything was written


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer Llama with SmolLM2's tokenizer and random weights: the launcher and the split are under test here,
    not what the model learns, and two processes of it start in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mathforge.backends.models import resolve_model

    src = resolve_model("smollm2")
    tok = AutoTokenizer.from_pretrained(src.name_or_path, gguf_file=src.gguf_file)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return str(out)


@requires_smollm2
@pytest.mark.slow
def test_two_cpu_processes_split_the_data_and_save_one_adapter(tiny_model, tmp_path):
    from mathforge.train.config import TrainConfig
    from mathforge.train.logs import read_log_history
    from mathforge.train.sft import train

    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}]}
            for i in range(8)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(model=tiny_model, data=str(data), output_dir=str(tmp_path / "out"), method="lora", lora_r=4,
                      lora_alpha=8, lora_dropout=0.0, learning_rate=1e-3, warmup_ratio=0.0, batch_size=2, grad_accum=1,
                      max_steps=2, max_seq_length=64, gradient_checkpointing=False, logging_steps=1, save_steps=2,
                      threads=1, num_processes=2, evaluate=False)
    metrics = train(cfg, seed=0)

    assert metrics["processes"] == 2 and metrics["global_step"] == 2
    ranks = metrics["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["rows"] for r in ranks] == [4, 4]  # 2 steps x batch 2 on each process: 8 rows between them
    assert not set(ranks[0]["first_rows"]) & set(ranks[1]["first_rows"])  # each trained on its own share
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "mathforge.json").exists()
    log = read_log_history(tmp_path / "out")
    losses = [r for r in log if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2]  # written once, by the main process, not once per process
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["ranks"] == ranks

    again = train(cfg, seed=0)  # a finished run is found by the launched processes: nothing retrained
    assert again["cached"] is True and again["global_step"] == 2
