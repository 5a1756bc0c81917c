"""Dataset loaders: each built-in dataset is one small file (loader, gold-answer parser, prompt defaults).

from mathforge.datasets import load
for problem in load("gsm8k", path="bundled:gsm8k-train-50", limit=3):
    print(problem.id, problem.answer)
"""

from mathforge.datasets.base import Loader, RowError
from mathforge.datasets.loading import load
from mathforge.datasets.readers import BUNDLED, bundled_path
from mathforge.datasets.registry import get_loader, list_datasets, register

__all__ = ["BUNDLED", "Loader", "RowError", "bundled_path", "get_loader", "list_datasets", "load", "register"]
