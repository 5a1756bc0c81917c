"""The eval config (one typed model for YAML recipes, ``--config`` files and CLI flags) and its benchmark entries."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from mathforge.config import StrictModel
from mathforge.request import MAX_TOKENS, TEMPERATURE, TOP_P
from mathforge.verify.stage import VerifyConfig

# The split a benchmark is scored on; None = the dataset's single file (SVAMP ships one SVAMP.json).
EVAL_SPLITS: dict[str, str | None] = {"svamp": None}


class BenchmarkSpec(StrictModel):
    """One benchmark: a dataset name from ``mathforge datasets``, where its file is, and how much of it to use."""

    name: str = Field(description="dataset name: gsm8k, math, math500, svamp, mathqa (or any loadable dataset)")
    path: str | None = Field(None, description="file or directory (default: <data_dir>/<name>, else the hub copy)")
    split: str | None = Field("test", description="split to score (SVAMP: its single file)")
    limit: int | None = Field(None, ge=1, description="first N problems only (default: the eval's limit)")
    prompt: str | None = Field(None, description="prompt template (default: the dataset's own)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "split": EVAL_SPLITS.get(data, "test")}
        if isinstance(data, dict) and "split" not in data and data.get("name") in EVAL_SPLITS:
            return {**data, "split": EVAL_SPLITS[data["name"]]}
        return data


class EvalConfig(StrictModel):
    """What to evaluate on what, and how: greedy and/or k samples per problem through the generate path."""

    models: list[str] | dict[str, dict[str, Any]] = Field(
        description="models: names of recipe teachers or local model specs (smollm2, a directory, a .gguf, a hub id), "
        "or a mapping name -> backend config ({backend: local|openai|vllm, ...})"
    )
    adapters: list[str] | dict[str, str] = Field(
        default_factory=list,
        description="PEFT adapter directories, or a mapping name -> directory; each is evaluated on top of the first "
        "model (which becomes the base)",
    )
    benchmarks: list[BenchmarkSpec] = Field(description="benchmark names, or {name, path, split, limit, prompt}")
    data_dir: str | None = Field(None, description="folder holding one sub-folder per benchmark (gsm8k/, math500/, ...)")
    limit: int | None = Field(None, ge=1, description="first N problems of every benchmark (default: all)")
    greedy: bool = Field(True, description="score one greedy (temperature 0) answer per problem")
    k: int = Field(1, ge=1, description="samples per problem for maj@k, pass@k and mean pass@1 (1 = none)")
    temperature: float = Field(TEMPERATURE, gt=0, description="sampling temperature of the k samples")
    top_p: float = Field(TOP_P, gt=0, le=1, description="nucleus mass of the k samples")
    max_tokens: int = Field(MAX_TOKENS, ge=1, description="most new tokens per answer")
    prompt: str | None = Field(None, description="prompt template for every benchmark (default: each dataset's own)")
    system_prompt: str | None = Field(None, description="replaces the template's system prompt")
    base: str | None = Field(None, description="model the deltas are measured against (default: the first model)")
    verify: VerifyConfig = Field(
        default_factory=VerifyConfig, description="answer checking, exactly as the verify stage: timeout, workers, extractors"
    )
    seed: int | None = Field(None, description="sampling seed (default: the recipe's seed)")

    @field_validator("benchmarks")
    @classmethod
    def _some(cls, value: list[BenchmarkSpec]) -> list[BenchmarkSpec]:
        if not value:
            raise ValueError("name at least one benchmark")
        names = [b.name for b in value]
        if len(set(names)) < len(names):
            raise ValueError(f"each benchmark once: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _need_a_metric(self) -> "EvalConfig":
        if not self.greedy and self.k < 2:
            raise ValueError("nothing to score: set greedy: true or k >= 2")
        return self
