"""Reports of runs: a static HTML page with plots, a Markdown summary and metrics.json (``mathforge report``)."""

from mathforge.report.build import build_report

__all__ = ["build_report"]
