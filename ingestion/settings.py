"""Settings of the ingestion API (environment variables ``COACH_INGESTION_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.http_server import HttpServerSettings

__all__ = ["IngestionSettings"]


class IngestionSettings(HttpServerSettings):
    """Limits and binding of ``POST /v1/submissions``."""

    model_config = SettingsConfigDict(env_prefix="COACH_INGESTION_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    """bind address"""
    port: int = 8000
    """ingestion API port"""
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """request body cap, enforced while streaming"""
    min_duration_s: float = Field(default=1.0, ge=0)
    """shortest accepted recording, seconds (header duration)"""
    max_duration_s: float = Field(default=600.0, gt=0)
    """longest accepted recording, seconds (header duration)"""
    probe_timeout_s: float = Field(default=5.0, gt=0)
    """limit on probing one upload with PyAV, seconds"""
    rate_limit_per_minute: float = Field(default=60.0, gt=0)
    """uploads per user"""
    max_recorded_age_days: int = Field(default=366, ge=1)
    """oldest recorded_at accepted, days"""
    rate_limit_burst: int = Field(default=20, ge=1)
    """uploads a user may send at once before the rate applies"""
    global_rate_limit_per_minute: float = Field(default=600.0, gt=0)
    """uploads of all users together per replica (429 'rate_limited_global' with Retry-After past it and the burst),
    beside the per-user limit"""
    global_rate_limit_burst: int = Field(default=100, ge=1)
    """uploads of all users together at once before the global rate applies"""
    max_requests_in_flight: int = Field(default=64, ge=1)
    """uploads answered at once (each may hold a probe thread); more get 503 with Retry-After: 1 (/healthz, /readyz,
    /metrics exempt)"""
