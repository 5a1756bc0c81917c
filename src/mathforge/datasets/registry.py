"""The built-in datasets by name: adding one is a new file beside this one and a line in LOADERS."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from mathforge.datasets.arith import Arith
from mathforge.datasets.base import Loader
from mathforge.datasets.generic import Generic
from mathforge.datasets.gsm8k import GSM8K
from mathforge.datasets.math import MATH
from mathforge.datasets.math500 import MATH500
from mathforge.datasets.mathqa import MathQA
from mathforge.datasets.numinamath import NuminaMath
from mathforge.datasets.svamp import SVAMP
from mathforge.errors import ConfigError

LOADERS: dict[str, type[Loader]] = {cls.name: cls for cls in (GSM8K, MATH, MATH500, NuminaMath, MathQA, SVAMP, Arith, Generic)}
ALIASES = {"numinamath-1.5": "numinamath", "math-500": "math500", "hendrycks_math": "math"}


def register(cls: type[Loader]) -> type[Loader]:
    """Add a dataset defined outside mathforge (usable as a class decorator)."""
    LOADERS[cls.name] = cls
    return cls


def list_datasets() -> list[str]:
    """Names of the available datasets, built-ins first."""
    return list(LOADERS)


def get_loader(name: str, **options: Any) -> Loader:
    """The loader for ``name`` (or an alias), built with its options; unknown names and options list the valid ones."""
    key = ALIASES.get(name, name)
    if key not in LOADERS:
        hint = difflib.get_close_matches(name, [*LOADERS, *ALIASES], n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"unknown dataset '{name}'{extra}; valid datasets: {', '.join(LOADERS)}")
    cls = LOADERS[key]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "options")]
    unknown = sorted(set(options) - set(valid))
    if unknown and valid:
        raise ConfigError(f"dataset '{key}' has no option {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return cls(**options)
