"""Gold-answer parsers shared by the loaders: GSM8K's ``####`` line, the last ``\\boxed{}``, and plain numbers."""

from __future__ import annotations

import math
import re
from typing import Any

from mathforge.verify.extract import braced_at

_BOX = re.compile(r"\\(?:boxed|fbox)\b\s*")


def gsm8k_gold(text: str) -> str | None:
    """The text after the last ``####`` with thousands commas removed ("1,000" -> "1000"); None if absent."""
    if "####" not in text:
        return None
    gold = text.rsplit("####", 1)[1].strip().replace(",", "")
    return gold or None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``/``\\fbox{...}`` (nested braces kept), or of ``\\boxed 5``.

    None when there is no box, or the last one is empty or has unbalanced braces: a gold we cannot trust.
    """
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    found = braced_at(text, matches[-1].end())
    return (found[0].strip() or None) if found else None


def number_text(value: Any) -> str | None:
    """A number as canonical text (51.0 -> "51", 0.5 -> "0.5", "1,000" -> "1000"); None if not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if re.fullmatch(r"[-+]?\d+", text):
            return str(int(text))  # exact, even past float precision
        try:
            value = float(text)
        except ValueError:
            return None
    if not isinstance(value, float) or not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() else repr(value)
