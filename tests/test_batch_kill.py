"""Exactly once under SIGKILL: a real `mathforge run` killed at each point of the batch lifecycle, then rerun."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from batch_kill import POINTS, kill_at
from fake_batch_server import BatchServerThread


@pytest.fixture(scope="module")
def server():
    with BatchServerThread() as srv:
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_each_point_never_submits_twice_and_loses_nothing(server, tmp_path, point):
    r = kill_at(server, point, tmp_path)
    assert r["reached"], f"the client never reached {point}: {r['first_stderr']}"
    assert set(r["ledger_at_kill"]) <= POINTS[point][1] and r["ledger_at_kill"].get("submitting", 0) + r[
        "ledger_at_kill"].get("submitted", 0) > 0, r["ledger_at_kill"]
    assert r["rerun_exit"] == 0, r["rerun_stderr"]
    assert r["ledger_after"] == {"ok": r["requests"]}
    assert r["duplicates"] == 0 and r["submitted"] == r["submissions"] == r["requests"]
