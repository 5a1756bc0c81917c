"""mathforge: make mathematical-reasoning training data and prove that it works."""

__version__ = "0.1.0"

from mathforge.masking import install_log_masking

# Every log line of a process that uses mathforge is masked (HTTP client debug logs can quote an Authorization header).
install_log_masking()
