"""Answer verification: named extractors, layered equivalence, hard time limits, majority vote, sandboxed PoT.

    from mathforge.verify import check
    v = check("... #### 18", "18")   # Verdict(correct=True, method="numeric-exact", extractor="gsm8k-hash", ...)
"""

from mathforge.verify.batch import verify_rows
from mathforge.verify.check import Verdict, acheck, check
from mathforge.verify.extract import EXTRACTORS, extract, parse_options
from mathforge.verify.vote import MajorityResult, majority_vote

__all__ = [
    "EXTRACTORS",
    "MajorityResult",
    "Verdict",
    "acheck",
    "check",
    "extract",
    "majority_vote",
    "parse_options",
    "verify_rows",
]
