"""mathforge: make mathematical-reasoning training data and prove that it works."""

import os as _os
import sys as _sys

# OpenMP threads that spin while waiting cost 9x the CPU time per decode step on a busy 2-core machine (measured in
# bench/results/local_backend.md); sleeping waits cost little when idle. libgomp reads this once, when torch loads.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from mathforge.masking import install_log_masking

# Every log line of a process that uses mathforge is masked (HTTP client debug logs can quote an Authorization header).
install_log_masking()
