"""Curation: filters that keep their rejects, benchmark decontamination, dedup, and RFT distinct-path selection.

    from mathforge.curate import CurateConfig, curate
    result = curate(sample_rows, CurateConfig(decontam={"benchmarks": [{"name": "gsm8k", "path": "test.jsonl"}]}))
    result.kept, result.rejected, result.funnel
"""

from mathforge.curate.stage import CurateConfig, CurateResult, Funnel, curate

__all__ = ["CurateConfig", "CurateResult", "Funnel", "curate"]
