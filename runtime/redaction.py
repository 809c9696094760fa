"""Redaction of credentials in connection strings before they are printed or logged.

One function, :func:`redact_dsn`, for every DSN or URL the platform shows an operator (``coach migrate``, the
replay, the projector's CLI): PostgreSQL libpq URIs and keyword DSNs, ClickHouse and Kafka Connect URLs, Kafka
bootstrap lists. Only the secret is replaced (by :data:`REDACTED`); the scheme, user, hosts, ports and database
stay readable, so an error still says where the platform tried to connect.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "SECRET_KEYS", "redact_dsn", "redact_secrets"]

REDACTED = "***"
"""What a secret is replaced by."""

SECRET_KEYS: frozenset[str] = frozenset(
    {"password", "passwd", "pwd", "sslpassword", "secret", "token", "access_token", "api_key", "apikey"}
)
"""Keys (case-insensitive) whose values are secrets in ``key=value`` pairs (libpq keywords, URL query strings)."""

# scheme://netloc: the netloc ends at the path, the query, the fragment, whitespace or the next scheme://.
# libpq allows several hosts in one netloc (``postgresql://u:p@h1,h2/db``); the userinfo is before the last '@'.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URL = re.compile(rf"(?P<scheme>{_SCHEME})(?P<netloc>(?:(?!{_SCHEME})[^/?#\s])*)")
# key = value, the value single-quoted (libpq: backslash escapes ' and \) or up to whitespace, '&' or '#'.
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s&#]*)"
)

# "key": "value" (JSON, a Python dict's repr): e.g. a connector configuration quoted in an error message.
_QUOTED = re.compile(
    r"""(?P<q>["'])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P=q)(?P<sep>\s*:\s*)(?P<v>["'])(?:\\.|(?!(?P=v)).)*(?P=v)"""
)


def _secret(key: str) -> bool:
    return key.lower().rsplit(".", 1)[-1] in SECRET_KEYS


def _netloc(match: re.Match[str]) -> str:
    scheme, netloc = match.group("scheme"), match.group("netloc")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return match.group(0)
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}{user}{':' + REDACTED if colon else ''}@{hosts}"


def _pair(match: re.Match[str]) -> str:
    key = match.group("key")
    return f"{key}{match.group('eq')}{REDACTED}" if _secret(key) else match.group(0)


def _quoted(match: re.Match[str]) -> str:
    if not _secret(match.group("key")):
        return match.group(0)
    q, v = match.group("q"), match.group("v")
    return f"{q}{match.group('key')}{q}{match.group('sep')}{v}{REDACTED}{v}"


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its secrets replaced by ``***``, for printing and logging.

    * the password of a URL's userinfo: ``postgresql://coach:s3cret@db:5432/coach`` →
      ``postgresql://coach:***@db:5432/coach`` (every ``scheme://`` in the string, so a list of URLs works too;
      a user without a password is kept as it is);
    * the value of a secret key (:data:`SECRET_KEYS`, case-insensitive, also dotted such as
      ``database.password``) in ``key=value`` pairs: libpq keyword DSNs (``host=db password='a b' dbname=x`` →
      ``host=db password=*** dbname=x``, quoted values included) and URL query strings
      (``http://ch:8123/?user=default&password=x`` → ``…&password=***``);
    * the value of a secret key quoted as in JSON or a dict's repr (``"database.password": "x"`` →
      ``"database.password": "***"``), e.g. a connector configuration inside an error message.

    Anything else (``chdb://<dir>``, ``127.0.0.1:9092``, an empty string) comes back unchanged. Never raises; the
    result is meant for humans, not for connecting.
    """
    return _QUOTED.sub(_quoted, _PAIR.sub(_pair, _URL.sub(_netloc, dsn)))


# Credentials that travel outside DSNs: HTTP authorization values and API keys in the common vendor formats
# (OpenAI-style ``sk-…``, Slack ``xox…``, GitHub ``ghp_…``, AWS access key ids).
_TOKENS = re.compile(
    r"(?i)(?P<auth>\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=\-]{8,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}|\bxox[abposr]-[A-Za-z0-9\-]{8,}|\bgh[pousr]_[A-Za-z0-9]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
)


def _token(match: re.Match[str]) -> str:
    return f"{match.group('auth')}{REDACTED}" if match.group("auth") else REDACTED


def redact_secrets(text: str) -> str:
    """:func:`redact_dsn`, then bearer/basic credentials and API-key-shaped tokens replaced by ``***``: for any
    text that may quote a secret (log lines, provider errors put on events). Never raises."""
    return _TOKENS.sub(_token, redact_dsn(text))
