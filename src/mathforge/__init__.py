"""mathforge: make mathematical-reasoning training data and prove that it works."""

__version__ = "0.1.0"
