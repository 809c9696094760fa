"""Token-bucket rate limiting of uploads (in-process): per user, and one global bucket beside it.

Each bucket holds ``burst`` tokens refilled at ``rate_per_minute / 60`` tokens per second (the classic token
bucket, e.g. RFC 2697's description of token-bucket metering). :class:`UploadLimiter` takes a token from the
user's bucket and one from the global bucket (all users of this replica together), so one user cannot exceed its
rate and all users together cannot exceed the replica's. With several ingestion replicas both limits are per
replica; put a shared limiter in front for a cluster-wide one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TokenBucketLimiter", "UploadLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``acquire(key)`` returns 0.0 when allowed, else the seconds to wait before retrying.

    At most ``max_keys`` buckets are kept; past that, the half updated longest ago is dropped (a dropped key starts
    again with a full bucket, so eviction can only be lenient). ``timer``: monotonic seconds.
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._timer = timer
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``; returns 0.0 on success or the retry-after delay (s)."""
        now = self._timer()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    for stale in sorted(self._buckets, key=lambda k: self._buckets[k].updated)[: self.max_keys // 2]:
                        del self._buckets[stale]
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def refund(self, key: str) -> None:
        """Give back the token just taken for ``key`` (its request was refused by another limit)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.tokens = min(self.burst, bucket.tokens + 1.0)


_GLOBAL = "\x00global"  # not a possible user id (ids have no control characters)


class UploadLimiter:
    """The per-user bucket (``per_user_per_minute``, ``per_user_burst``) and the global bucket (``global_per_minute``,
    ``global_burst``) of one ingestion replica. ``timer``: monotonic seconds."""

    def __init__(
        self,
        per_user_per_minute: float,
        per_user_burst: int,
        global_per_minute: float,
        global_burst: int,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = TokenBucketLimiter(per_user_per_minute, per_user_burst, timer=timer)
        self.everyone = TokenBucketLimiter(global_per_minute, global_burst, max_keys=1, timer=timer)

    def acquire(self, user_id: str) -> tuple[str, float] | None:
        """Take a token of ``user_id`` and one of the global bucket. Returns None when both allow the upload, else
        ``(scope, retry_after_s)`` with ``scope`` ``"user"`` or ``"global"``; a refused upload takes no token."""
        wait = self.per_user.acquire(user_id)
        if wait > 0:
            return "user", wait
        wait = self.everyone.acquire(_GLOBAL)
        if wait > 0:
            self.per_user.refund(user_id)
            return "global", wait
        return None
