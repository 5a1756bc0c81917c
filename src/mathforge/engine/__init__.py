"""The request engine between the generate stage and remote backends: rate limits, adaptive concurrency, retries,
learned timeouts, cost and budget accounting. It knows nothing of HTTP: a backend hands it an async ``send``."""

from mathforge.engine.accounting import Budget, Pricing, TeacherStats
from mathforge.engine.concurrency import AdaptiveConcurrency
from mathforge.engine.limits import RateLimiter
from mathforge.engine.retry import ApiError, RetryPolicy
from mathforge.engine.jobs import Job, make_jobs, sample_seed
from mathforge.engine.runner import Engine, EngineConfig, Reply
from mathforge.engine.timeouts import LatencyTimeout

__all__ = [
    "AdaptiveConcurrency", "ApiError", "Budget", "Engine", "EngineConfig", "Job", "LatencyTimeout", "Pricing",
    "RateLimiter", "Reply", "RetryPolicy", "TeacherStats", "make_jobs", "sample_seed",
]
