"""What to do after a failed attempt: retry after a backoff (honouring Retry-After), give up, or stop the teacher."""

from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import Literal, Mapping

from mathforge.masking import mask_text

# kind of failure, decided by the backend from the status code or the exception
Kind = Literal["status", "timeout", "connect", "connection", "malformed"]
Action = Literal["retry", "fail", "abort"]

RETRYABLE_STATUS = {408, 409, 429}
FATAL_STATUS = {401: "API key rejected", 403: "permission denied", 404: "model or endpoint not found"}
BAD_REQUEST_STATUS = {400, 413, 422}


@dataclass
class ApiError(Exception):
    """One failed attempt, as the engine needs to see it (the message is already free of secrets)."""

    kind: Kind
    message: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from Retry-After / retry-after-ms
    headers: Mapping[str, str] | None = None
    abandoned: bool = False  # the engine cut the attempt short (it may still be billed)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else f"{self.kind}: {self.message}"


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, capped; Retry-After wins when the server gives one."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def action(self, error: ApiError) -> Action:
        """Retry transient failures, fail a request the server will never accept, abort on auth/model errors."""
        if error.kind != "status":
            return "retry"
        status = error.status or 0
        if status in FATAL_STATUS:
            return "abort"
        if status in RETRYABLE_STATUS or status >= 500:
            return "retry"
        return "fail"

    def delay(self, attempt: int, error: ApiError | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        jittered = (rng or random).uniform(cap / 2, cap)
        if error is not None and error.retry_after is not None:
            return max(error.retry_after, min(jittered, 1.0))
        return jittered


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations (``1s``, ``6m0s``, ``20ms``, ``1.5s``) or plain seconds, in seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(v) * scale[u] for v, u in parts)


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove API keys (the real one, and anything shaped like a key, even partly masked) from an error message."""
    return mask_text(text, secrets)
