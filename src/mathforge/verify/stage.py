"""The verify stage for recipes: typed config plus ``run_verify_stage`` over a samples table's rows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mathforge.verify.batch import verify_rows
from mathforge.verify.check import DEFAULT_CHAIN
from mathforge.verify.extract import EXTRACTORS
from mathforge.verify.sandbox import reset_sandbox_mode, set_sandbox_mode


class VerifyConfig(BaseModel):
    """Settings of the verify stage (recipe key ``verify``; also the ``mathforge verify`` flags)."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(5.0, gt=0, description="Hard wall-clock limit in seconds for one symbolic check.")
    workers: int | None = Field(None, ge=1, description="Worker processes for symbolic checks (default: all cores).")
    extractors: list[str] | None = Field(
        None,
        description=f"Answer extractors tried in order (default: {', '.join(DEFAULT_CHAIN)}). "
        f"Known: {', '.join([*EXTRACTORS, 'math-verify'])}.",
    )

    sandbox: Literal["bwrap", "unsafe-no-isolation"] | None = Field(
        None,
        description="How the `pot` extractor runs model code: `bwrap` (default; needs `apt-get install bubblewrap`) "
        "or `unsafe-no-isolation` (no OS isolation at all; only for code you trust). Default: $MATHFORGE_SANDBOX "
        "or bwrap.",
    )

    def model_post_init(self, __context: object) -> None:
        unknown = [e for e in self.extractors or [] if e not in EXTRACTORS and e != "math-verify"]
        if unknown:
            raise ValueError(f"unknown extractors {unknown}; known: {', '.join([*EXTRACTORS, 'math-verify'])}")


def run_verify_stage(rows: list[dict], cfg: VerifyConfig) -> list[dict]:
    """Add verdict columns to samples rows (``text``, ``gold``; ``choices``/``meta.options`` for multiple choice)."""
    token = set_sandbox_mode(cfg.sandbox)
    try:
        return verify_rows(rows, workers=cfg.workers, timeout=cfg.timeout, extractors=cfg.extractors)
    finally:
        reset_sandbox_mode(token)
