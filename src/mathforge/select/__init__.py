"""Data selection: score rows by how much they should help the target, keep the best under a budget."""

from mathforge.select.config import SelectConfig
from mathforge.select.select import SelectResult, select_rows

__all__ = ["SelectConfig", "SelectResult", "select_rows"]
