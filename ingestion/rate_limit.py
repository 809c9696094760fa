"""Per-user token-bucket rate limiting of uploads (in-process).

Each user has a bucket of ``burst`` tokens refilled at ``rate_per_minute / 60`` tokens per second
(the classic token bucket, e.g. RFC 2697's description of token-bucket metering). With several
ingestion replicas the effective limit is per replica; put a shared limiter in front for a global one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

__all__ = ["TokenBucketLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``acquire(user)`` returns 0.0 when allowed, else the seconds to wait before retrying."""

    def __init__(self, rate_per_minute: float, burst: int):
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, user_id: str) -> float:
        """Take one token for ``user_id``; returns 0.0 on success or the retry-after delay (s)."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(user_id, _Bucket(self.burst, now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate
