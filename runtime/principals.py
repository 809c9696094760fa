"""Bearer-token principals: API keys created by ``coach keys create``, stored hashed in PostgreSQL.

A token is ``sc_`` + 32 random bytes (URL-safe base64), so a plain SHA-256 digest is a sufficient
at-rest hash (no password-stretching needed for high-entropy secrets; see OWASP's guidance on API
keys). The user id comes from the token, never from the request.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Principal",
    "Role",
    "ROLES",
    "active_principals",
    "create_api_key",
    "hash_token",
    "lookup_principal",
    "revoke_api_key",
]

Role = Literal["learner", "coach", "admin"]
ROLES: tuple[Role, ...] = ("learner", "coach", "admin")
TOKEN_PREFIX = "sc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id and the role of the key used."""

    user_id: str
    role: Role
    key_id: uuid.UUID


def hash_token(token: str) -> str:
    """Hex SHA-256 of a bearer token (what ``api_keys.token_sha256`` stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_key(conn: Any, user_id: str, role: Role) -> str:
    """Create a key for ``user_id`` with ``role`` on a psycopg connection; returns the token (shown once).

    Raises ``ValueError`` on an unknown role or an empty user id.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not user_id.strip():
        raise ValueError("user id must not be empty")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (key_id, user_id, role, token_sha256) VALUES (%s, %s, %s, %s)",
        (uuid.uuid4(), user_id, role, hash_token(token)),
    )
    return token


def revoke_api_key(conn: Any, key_id: uuid.UUID) -> bool:
    """Revoke a key; returns False when no active key has that id."""
    cur = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
    return bool(cur.rowcount)


def lookup_principal(conn: Any, token: str) -> Principal | None:
    """The principal of an active key, or None for an unknown, malformed or revoked token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    row = conn.execute(
        "SELECT user_id, role, key_id FROM api_keys WHERE token_sha256 = %s AND revoked_at IS NULL",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return None
    return Principal(user_id=row[0], role=row[1], key_id=row[2])


def active_principals(conn: Any, token_hashes: list[str]) -> dict[str, Principal]:
    """The principals of the active keys among ``token_hashes`` (:func:`hash_token` digests), keyed by digest, in
    one query; unknown and revoked keys are absent."""
    rows = conn.execute(
        "SELECT token_sha256, user_id, role, key_id FROM api_keys WHERE token_sha256 = ANY(%s) AND revoked_at IS NULL",
        (token_hashes,),
    ).fetchall()
    return {row[0]: Principal(user_id=row[1], role=row[2], key_id=row[3]) for row in rows}
