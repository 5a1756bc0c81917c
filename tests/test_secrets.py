"""Secrets are never written or printed: a key pasted into ``api_key_env``, key-shaped text in config, errors, logs,
the run summary and the report."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mathforge.config import validate
from mathforge.backends.openai_api import OpenAIConfig
from mathforge.errors import ConfigError
from mathforge.masking import looks_like_secret, mask_config, mask_text, secret_field
from mathforge.pipeline.recipe import parse_recipe, run_recipe
from mathforge.summary import write_summary

KEY = "sk-proj-" + "Zq3xR7tLm2Vb9Kd4Hs8Wn1Pf6Yc5Jg0A"  # shaped like an OpenAI project key (made up)
KEYS = {
    "openai": KEY,
    "anthropic": "sk-ant-api03-" + "Qw7Er4Ty1Ui8Op5As2Df9Gh6Jk3Lz0Xc",
    "huggingface": "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "google": "AIzaSy" + "B1c2D3e4F5g6H7i8J9k0L1m2N3o4P5q6",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "aws id": "AKIA" + "IOSFODNN7EXAMPL3",
    "no prefix (mistral-like)": "Xk4v9QmT2wLp7Rz1Bn8Ys3Hd6Gf0Jc5A",
    "no prefix (hex, together-like)": "3f9a0c2e7b1d4f6a8c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a3c5e7b9d1f2a",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
}
LOAD_ONLY = [{"load": {"dataset": "gsm8k", "path": "bundled:gsm8k-train-50", "limit": 2}}]


# --- the masking rules -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KEYS))
def test_key_shapes_are_masked_in_text(kind):
    text = f"Incorrect API key provided: {KEYS[kind]}. See the docs."
    assert KEYS[kind] not in mask_text(text) and "***" in mask_text(text) and looks_like_secret(KEYS[kind])


@pytest.mark.parametrize(
    "text, masked",
    [
        ("Authorization: Bearer abc.DEF-123_xyz", "Authorization: Bearer ***"),
        ("https://api.example.com/v1?api_key=s3cr3t&x=1", "https://api.example.com/v1?api_key=***&x=1"),
        ("https://user:hunter22@host.example/v1", "https://user:***@host.example/v1"),
        ("token=abcdefgh12", "token=***"),
        ("partly masked sk-ab***mnop stays masked", "partly masked *** stays masked"),
    ],
)
def test_bearer_url_and_partial_keys(text, masked):
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "~/.cache/huggingface/hub/models--x/snapshots/2c4c79db26f4b54392ee892d018dd56c58e5556d/model.gguf",
        "max_tokens=512, token budget exhausted, 12345678901234567890123456789012345",
        "scikit-learn task-12 risk-free ASIA-Pacific",
        "http://127.0.0.1:8000/v1",
    ],
)
def test_ordinary_config_text_is_kept(text):
    assert mask_text(text) == text and not looks_like_secret(text)


def test_secret_field_names():
    assert all(map(secret_field, ["api_key", "hf_token", "token", "client_secret", "password", "access_key", "key"]))
    assert not any(map(secret_field, ["max_tokens", "prompt_key", "pad_token", "api_key_env", "tokens_in", "sort_key"]))


def test_mask_config_fields_and_env_names():
    cfg = {
        "teachers": {"t": {"api_key_env": "OPENAI_API_KEY", "model": "gpt-4o-mini"}},
        "trainer_args": {"hub_token": "whatever-it-is", "pad_token": "<|pad|>", "max_tokens": 5},
        "other": [{"token_env": KEY}, f"see {KEY}"],
    }
    masked = mask_config(cfg)
    assert masked["teachers"] == cfg["teachers"]  # a variable's name is not a secret
    assert masked["trainer_args"] == {"hub_token": "***", "pad_token": "<|pad|>", "max_tokens": 5}
    assert masked["other"] == [{"token_env": "***"}, "see ***"]


# --- a key pasted as api_key_env ----------------------------------------------------------------------------------------


def _recipe(**teacher) -> dict:
    return {"name": "t", "teachers": {"api": {"backend": "openai", "model": "m", **teacher}}, "stages": LOAD_ONLY}


def test_key_pasted_as_api_key_env_is_refused_without_echo():
    with pytest.raises(ConfigError) as info:
        parse_recipe(_recipe(api_key_env=KEY), "r.yaml")
    msg = str(info.value)
    assert KEY not in msg and "Zq3x" not in msg
    assert "teachers.api: api_key_env: must be the NAME of an environment variable" in msg and "(got ***)" in msg
    with pytest.raises(Exception) as raw:  # pydantic's own message (outside validate()) does not show it either
        OpenAIConfig(model="m", api_key_env=KEY)
    assert KEY not in str(raw.value)


def test_the_same_through_the_cli_writes_nothing(tmp_path):
    recipe = tmp_path / "r.yaml"
    run = tmp_path / "run"
    recipe.write_text(yaml.safe_dump({**_recipe(api_key_env=KEY), "run_dir": str(run)}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-m", "mathforge", "run", str(recipe)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2 and "api_key_env: must be the NAME" in out.stderr
    assert KEY not in out.stdout + out.stderr and not run.exists()


def test_validation_errors_never_echo_a_secret(monkeypatch):
    with pytest.raises(ConfigError) as info:  # a key pasted into the wrong field is still not echoed
        parse_recipe(_recipe(api_key_env="OPENAI_API_KEY", rpm=KEY))
    assert KEY not in str(info.value) and "rpm" in str(info.value)
    monkeypatch.setenv("MF_TEST_PLAIN", "not-a-key-shape-but-secret")  # substituted values are put back as ${VAR}
    with pytest.raises(ConfigError) as info:
        parse_recipe(_recipe(api_key_env="OPENAI_API_KEY", tpm="${MF_TEST_PLAIN}"))
    assert "not-a-key-shape-but-secret" not in str(info.value) and "${MF_TEST_PLAIN}" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate(OpenAIConfig, {"model": "m", "base_url": {"api_key": KEY}}, "teacher")
    assert KEY not in str(info.value)


# --- what a run writes -----------------------------------------------------------------------------------------------


def test_effective_recipe_and_summary_hold_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MF_TEST_KEY", KEYS["no prefix (mistral-like)"])
    recipe = {
        "name": "t",
        "description": f"pasted by mistake: Bearer {KEYS['github']} and ${{MF_TEST_KEY}}",
        "teachers": {"api": {"backend": "openai", "model": "m", "api_key_env": "MF_TEST_KEY",
                             "base_url": f"https://user:{KEYS['google']}@api.example.com/v1"}},
        "stages": LOAD_ONLY,
    }
    run = tmp_path / "run"
    summary = run_recipe(parse_recipe(recipe), run)
    written = (run / "recipe.yaml").read_text()
    for key in KEYS.values():
        assert key not in written
    effective = yaml.safe_load(written)
    assert effective["teachers"]["api"]["api_key_env"] == "MF_TEST_KEY"  # the variable's name is kept
    assert "${MF_TEST_KEY}" in effective["description"] and "Bearer ***" in effective["description"]
    assert effective["teachers"]["api"]["base_url"] == "https://user:***@api.example.com/v1"
    summary["stages"]["load"]["note"] = f"teacher said: invalid key {KEY}"  # a stage metric quoting an error
    write_summary(run, summary)
    assert KEY not in (run / "summary.json").read_text() and json.loads((run / "summary.json").read_text())


def test_report_masks_key_shaped_text(tmp_path):
    from mathforge.report import build_report

    data = tmp_path / "train.jsonl"
    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "leak?", "answer": f"#### {KEY}"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    run_recipe(parse_recipe({"name": "t", "stages": [{"load": {"dataset": "gsm8k", "path": str(data),
                                                               "on_bad_row": "skip"}}]}), run)
    (reason,) = pq.read_table(run / "rejected.parquet").column("reason").to_pylist()
    assert "is not a number" in reason  # the reject quotes the bad value: data, kept as it is in the table
    out = tmp_path / "report"
    build_report([run], out)
    for name in ("index.html", "summary.md", "metrics.json"):
        text = (out / name).read_text()
        assert KEY not in text, name
    assert "is not a number" in (out / "metrics.json").read_text()  # the reason itself is still shown


def test_log_records_are_masked(caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").debug("request headers: %s", {"Authorization": f"Bearer {KEY}"})
    logging.getLogger("mathforge.engine").warning(f"teacher t: 401 Incorrect API key provided: {KEY}")
    assert len(caplog.records) == 2 and KEY not in caplog.text and "Incorrect API key provided: ***" in caplog.text
