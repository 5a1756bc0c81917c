"""Recipe and config validation: unknown keys, duplicates, secrets, bundled recipes."""

from __future__ import annotations

import os

import pytest
import yaml

from mathforge.config import load_yaml
from mathforge.errors import ConfigError
from mathforge.pipeline.recipe import bundled_recipes, load_recipe, parse_recipe

BASE = {
    "name": "t",
    "teachers": {"smol": {"backend": "local", "model": "smollm2"}},
    "stages": [{"load": {"dataset": "gsm8k", "path": "bundled:gsm8k-train-50"}}, {"generate": {"k": 2}}],
}


def test_valid_recipe_fills_defaults():
    r = parse_recipe(BASE)
    assert [s[0] for s in r.stages] == ["load", "generate"]
    gen = r.stages[1][2]
    assert gen.k == 2 and gen.temperature == 0.7 and gen.max_tokens == 512
    eff = r.effective()
    assert eff["teachers"]["smol"]["batch_size"] == 32


def test_misspelt_stage_key_names_key_and_valid_ones():
    bad = dict(BASE, stages=[BASE["stages"][0], {"generate": {"k": 2, "temprature": 0.5}}])
    with pytest.raises(ConfigError) as e:
        parse_recipe(bad, "r.yaml")
    msg = str(e.value)
    assert "r.yaml" in msg and "stages[1].generate" in msg
    assert "unknown key 'temprature'" in msg and "did you mean 'temperature'" in msg
    assert "max_tokens" in msg  # the valid keys are listed


def test_unknown_top_level_and_teacher_keys():
    with pytest.raises(ConfigError, match="unknown key 'stagess'"):
        parse_recipe(dict(BASE, stagess=[]))
    bad = dict(BASE, teachers={"smol": {"backend": "local", "modle": "x"}})
    with pytest.raises(ConfigError, match=r"teachers.smol.*unknown key 'modle'.*did you mean 'model'"):
        parse_recipe(bad)


def test_unknown_stage_and_backend():
    with pytest.raises(ConfigError, match="unknown stage 'generat'"):
        parse_recipe(dict(BASE, stages=[{"generat": {}}]))
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        parse_recipe(dict(BASE, teachers={"x": {"backend": "nope"}}))


def test_bad_value_names_field():
    bad = dict(BASE, stages=[{"generate": {"k": 0}}])
    with pytest.raises(ConfigError, match=r"stages\[0\]\.generate: k: Input should be greater than or equal to 1 \(got 0\)"):
        parse_recipe(bad)


def test_duplicate_yaml_key_is_an_error():
    with pytest.raises(ConfigError, match="duplicate key 'k'"):
        load_yaml("stages:\n  - generate:\n      k: 2\n      k: 3\n", "dup.yaml")


def test_env_secret_substituted_and_masked(monkeypatch):
    monkeypatch.setenv("MF_TEST_SECRET", "sk-very-secret-123")
    data = dict(BASE, description="uses ${MF_TEST_SECRET}")
    r = parse_recipe(data)
    assert r.description == "uses sk-very-secret-123"
    dumped = yaml.safe_dump(r.effective())
    assert "sk-very-secret-123" not in dumped and "${MF_TEST_SECRET}" in dumped


def test_missing_env_var_is_named():
    os.environ.pop("MF_DEFINITELY_UNSET", None)
    with pytest.raises(ConfigError, match="MF_DEFINITELY_UNSET is not set"):
        parse_recipe(dict(BASE, description="${MF_DEFINITELY_UNSET}"))


def test_bundled_recipes_all_validate():
    recipes = bundled_recipes()
    assert "quickstart" in recipes
    for name in recipes:
        try:
            load_recipe(name)
        except ConfigError as exc:
            if "is not set" in str(exc):  # recipes that read API keys from the environment
                continue
            raise


def test_recipe_file_not_found():
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe("does/not/exist.yaml")
    with pytest.raises(ConfigError, match="no recipe file or bundled recipe named 'nope'"):
        load_recipe("nope")
