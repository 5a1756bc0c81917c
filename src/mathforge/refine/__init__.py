"""Self-improvement grounded by the verifier: a judge scores samples on named criteria, weak ones are rewritten with
the critique, every rewrite is re-verified against the gold, and every round is kept.

    from mathforge.refine import RefineConfig, refine_samples
"""

from mathforge.refine.judge import Judgement, parse_judgement
from mathforge.refine.loop import RefineResult, refine_samples
from mathforge.refine.stage import RefineConfig, RefineStage

__all__ = ["Judgement", "RefineConfig", "RefineResult", "RefineStage", "parse_judgement", "refine_samples"]
