"""Jobs: the API calls a list of requests becomes (consecutive samples of one prompt may share a call via ``n``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from mathforge.request import GenRequest


@dataclass
class Job:
    """One API call: one or more requests (consecutive samples of one prompt, sent with ``n``)."""

    requests: list[GenRequest]
    prompt_chars: int
    attempts: int = 0
    timeouts: int = 0

    @property
    def n(self) -> int:
        return len(self.requests)

    @property
    def max_tokens(self) -> int:
        return self.requests[0].params.max_tokens


def sample_seed(seed: int, sample_index: int) -> int:
    """A distinct seed per sample: the same seed for k samples would make a seeded API return one answer k times."""
    return (seed * 1_000_003 + sample_index) % 2**31


def make_jobs(requests: Sequence[GenRequest], n_per_request: int) -> list[Job]:
    """One job per request, or consecutive samples of the same prompt and parameters batched up to ``n``."""

    def chars(r: GenRequest) -> int:
        return sum(len(m.get("content") or "") for m in r.messages)

    if n_per_request == 1:
        return [Job([r], chars(r)) for r in requests]
    groups: dict[tuple, list[GenRequest]] = {}
    for r in requests:
        groups.setdefault((json.dumps(r.messages, sort_keys=True), r.params), []).append(r)
    jobs = []
    for rs in groups.values():
        rs.sort(key=lambda r: r.sample_index)
        for i in range(0, len(rs), n_per_request):
            jobs.append(Job(rs[i : i + n_per_request], chars(rs[i])))
    return jobs
