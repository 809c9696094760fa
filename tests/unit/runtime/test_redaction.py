"""Credentials never reach the console: :func:`runtime.redaction.redact_dsn`, and ``coach migrate``'s output."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from rich.console import Console

from coach.migrations import run_migrations
from runtime.redaction import REDACTED, redact_dsn
from runtime.settings import PlatformSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://user:secret@host/db", f"postgresql://user:{REDACTED}@host/db"),
        ("http://default:secret@host:8123", f"http://default:{REDACTED}@host:8123"),
        ("https://default:s%40cr%2Fet@ch.example:8443/coach", f"https://default:{REDACTED}@ch.example:8443/coach"),
        ("postgresql://u:p@h1:5432,h2:5432/db", f"postgresql://u:{REDACTED}@h1:5432,h2:5432/db"),
        ("postgresql://us@er:p@ss@host/db", f"postgresql://us@er:{REDACTED}@host/db"),  # userinfo ends at the last @
        (
            "postgresql://coach@db/coach?sslmode=require&password=secret",
            f"postgresql://coach@db/coach?sslmode=require&password={REDACTED}",
        ),
        ("http://ch:8123/?user=default&password=secret#x", f"http://ch:8123/?user=default&password={REDACTED}#x"),
        (
            "host=db port=5432 user=coach password=secret dbname=coach",
            f"host=db port=5432 user=coach password={REDACTED} dbname=coach",
        ),
        ("host=db password = 'se cr\\'et' dbname=x", f"host=db password = {REDACTED} dbname=x"),
        ("PASSWORD=secret sslpassword=key-secret", f"PASSWORD={REDACTED} sslpassword={REDACTED}"),
        (
            "SASL_SSL://u:secret@b1:9092,SASL_SSL://u:secret2@b2:9092",
            f"SASL_SSL://u:{REDACTED}@b1:9092,SASL_SSL://u:{REDACTED}@b2:9092",
        ),
        (
            '{"database.user": "coach", "database.password": "se\\"cret"}',
            f'{{"database.user": "coach", "database.password": "{REDACTED}"}}',
        ),
        ("{'password': 'secret'}", f"{{'password': '{REDACTED}'}}"),
        ("error at postgresql://a:secret@h/db: refused", f"error at postgresql://a:{REDACTED}@h/db: refused"),
    ],
)
def test_secrets_are_replaced(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert "secret" not in redact_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "chdb:///home/coach/.coach/chdb",
        "127.0.0.1:9092,127.0.0.1:9093",
        "postgresql://coach@127.0.0.1:5433/coach",  # a user without a password
        "http://127.0.0.1:8083",
        "host=db user=coach dbname=coach sslmode=require",
        "user_password_hint=none",  # not a secret key
    ],
)
def test_nothing_to_redact_comes_back_unchanged(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


def test_redaction_is_idempotent() -> None:
    once = redact_dsn("postgresql://u:secret@h/db?password=x host=a password=y")
    assert redact_dsn(once) == once


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening) for the duration of a test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_migrate_failures_print_no_password(refused_port: int) -> None:
    """Every failing step of ``coach migrate`` prints where it connected, without the passwords."""
    secrets = ("pg-s3cret", "ch-s3cret", "connect-s3cret", "kw-s3cret")
    where = f"127.0.0.1:{refused_port}"
    settings = PlatformSettings(
        pg_dsn=f"postgresql://coach:{secrets[0]}@{where}/coach?connect_timeout=3",
        clickhouse_url=f"http://default:{secrets[1]}@{where}",
        connect_url=f"http://admin:{secrets[2]}@{where}",
    )
    console = Console(record=True, width=400)
    # postgres and clickhouse fail; the connector step only runs after the earlier steps succeeded
    assert not run_migrations(console, settings=settings, topics=False, cdc=False)
    assert not run_migrations(console, settings=settings, topics=False, postgres=False, clickhouse=False)
    keyword = settings.model_copy(update={"pg_dsn": f"host=127.0.0.1 port={refused_port} password={secrets[3]}"})
    assert not run_migrations(console, settings=keyword, topics=False, cdc=False, clickhouse=False)
    out = console.export_text()
    assert "postgres migrations failed" in out and "clickhouse migrations failed" in out
    assert "debezium connector registration failed" in out
    assert f"postgresql://coach:{REDACTED}@{where}/coach" in out and f"http://default:{REDACTED}@{where}" in out
    assert f"http://admin:{REDACTED}@{where}" in out and f"password={REDACTED}" in out
    for secret in secrets:
        assert secret not in out, out
