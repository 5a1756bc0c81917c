"""The one config of the select stage, the ``mathforge select`` flags and the Python API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mathforge.config import StrictModel

Method = Literal["random", "pass-rate", "perplexity", "ifd", "influence"]


class ProxyConfig(StrictModel):
    """The small model that scores rows for ``perplexity``, ``ifd`` and ``influence``."""

    model: str = Field("smollm2", description="proxy model: 'smollm2', a directory, a .gguf file or a hub id")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` when it is a directory or hub repo")
    max_seq_length: int = Field(512, ge=16, description="prompt + response tokens scored per row (the response "
                                                        "tail is cut beyond it)")
    batch_size: int = Field(8, ge=1, description="rows per forward pass when scoring losses")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: unchanged)")
    system_prompt: str | None = Field(None, description="system message the rows are scored under (use the one the "
                                                        "student will train with)")


class InfluenceConfig(StrictModel):
    """LESS-style gradient features: LoRA gradients of the proxy, projected, compared with the target's."""

    target: str | None = Field(None, description="the target/validation examples (.jsonl/.parquet with messages, "
                                                 "or question + solution/text): what the selected data should help")
    target_limit: int | None = Field(64, ge=1, description="use at most this many target examples")
    proj_dim: int = Field(4096, ge=16, description="dimensions of the random projection of each gradient")
    lora_r: int = Field(8, ge=1, description="LoRA rank of the proxy whose gradients are the features")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    target_modules: list[str] = Field(["q_proj", "v_proj"], min_length=1, description="modules that get LoRA")
    warmup_fraction: float = Field(0.05, gt=0, le=1, description="share of the candidates the warm-up trains on")
    warmup_min: int = Field(16, ge=1, description="at least this many warm-up examples")
    warmup_epochs: int = Field(2, ge=1, description="warm-up epochs; one checkpoint at the end of each")
    learning_rate: float = Field(2e-4, gt=0, description="warm-up AdamW learning rate (linear decay)")
    batch_size: int = Field(4, ge=1, description="warm-up batch size")


class SelectConfig(StrictModel):
    method: Method = Field("random", description="random | pass-rate | perplexity | ifd | influence")
    keep: int | None = Field(None, ge=1, description="keep this many units (rows or problems)")
    fraction: float | None = Field(None, gt=0, le=1, description="keep this share of the units")
    unit: Literal["row", "problem"] = Field(
        "row", description="what the budget counts: rows, or problems (all rows of a kept problem stay together)")
    min_pass_rate: float = Field(0.0, ge=0, le=1, description="pass-rate: problems solved less often are dropped")
    max_pass_rate: float = Field(1.0, ge=0, le=1, description="pass-rate: problems solved more often are dropped")
    ifd_max: float | None = Field(1.0, gt=0, description="ifd: rows whose IFD reaches this are ranked last (the "
                                                         "question does not help predict the answer; Superfiltering)")
    proxy: ProxyConfig = Field(default_factory=ProxyConfig, description="scoring model for perplexity/ifd/influence")
    influence: InfluenceConfig = Field(default_factory=InfluenceConfig, description="influence settings")
    seed: int | None = Field(None, description="seed of random selection, tie breaks and the projection "
                                               "(default: the recipe's seed)")

    @model_validator(mode="after")
    def _budget(self) -> "SelectConfig":
        if (self.keep is None) == (self.fraction is None):
            raise ValueError("give exactly one budget: keep (a count) or fraction (a share)")
        if self.method == "influence" and not self.influence.target:
            raise ValueError("method influence needs influence.target: the examples the selection should help")
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError("min_pass_rate is above max_pass_rate")
        return self
