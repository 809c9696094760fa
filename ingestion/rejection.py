"""The typed rejection of an upload: an HTTP status, a machine-readable code and a reason."""

from __future__ import annotations

__all__ = ["Rejected"]


class Rejected(Exception):
    """An upload refused before any full decode; rendered as ``{"error": code, "reason": reason}``."""

    def __init__(self, status: int, code: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.headers = headers or {}
