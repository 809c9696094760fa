"""Shared fixtures. ``local_stack``: the real engines (Kafka, Kafka Connect + Debezium, PostgreSQL) for the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from runtime.settings import PlatformSettings
from stack.settings import StackSettings
from stack.supervisor import Supervisor

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Isolated state directory and non-default ports, so tests never touch a developer's `coach stack` (.coach, 9092…).
#: COACH_TEST_PORT_OFFSET (added to every port) and COACH_TEST_HOME let several engineers run the suite at once.
_OFFSET = int(os.environ.get("COACH_TEST_PORT_OFFSET", "0"))
TEST_STACK_ENV: dict[str, str] = {
    "COACH_HOME": os.environ.get("COACH_TEST_HOME", str(REPO_ROOT / ".coach-test")),
    "COACH_KAFKA_PORT": str(19092 + _OFFSET),
    "COACH_KAFKA_CONTROLLER_PORT": str(19093 + _OFFSET),
    "COACH_CONNECT_PORT": str(18083 + _OFFSET),
    "COACH_PG_PORT": str(15433 + _OFFSET),
    "COACH_TRANSCRIPTION_WORKER_METRICS_PORT": "0",
}

# chDB runs one engine per process on one data directory: every test of this session shares one (tests isolate
# themselves with their own ClickHouse databases, not paths; subprocesses get directories of their own). It lives
# outside COACH_HOME, which the stack fixture wipes while this process may have the engine open.
_SESSION_CHDB = tempfile.mkdtemp(prefix="coach-test-chdb-")
os.environ.setdefault("COACH_CLICKHOUSE_URL", f"chdb://{_SESSION_CHDB}")


@pytest.fixture(autouse=True)
def _forget_failed_token_lookups() -> Iterator[None]:
    """Tests reuse fixed tokens (``sc_ana-token``) that one test revokes and the next one creates again: the
    process-wide negative cache of failed lookups (:func:`runtime.principals.failed_lookups`) starts empty in each."""
    from runtime.principals import failed_lookups

    failed_lookups().clear()
    yield
    failed_lookups().clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this session's chDB directory."""
    shutil.rmtree(_SESSION_CHDB, ignore_errors=True)


def run_stack_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the project's own command ``python -m stack <args>`` (same as ``coach stack``), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stack", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@contextlib.contextmanager
def stack_running(settings: StackSettings, *up_args: str) -> Iterator[None]:
    """``python -m stack up <up_args>`` from a fresh ``settings.home`` (after a ``down`` of leftovers of an
    interrupted run); fails the test when ``up`` fails. On exit ``python -m stack down``, asserting that it succeeds,
    that ``status`` then reports the stack down, and that no engine process (pids from the pid files, and their
    process groups) is left. The ``COACH_*`` variables of ``settings`` must be in ``os.environ``."""
    run_stack_cli("down")
    shutil.rmtree(settings.home, ignore_errors=True)
    started = run_stack_cli("up", *up_args)
    if started.returncode != 0:
        run_stack_cli("down")
        pytest.fail(f"`python -m stack up {' '.join(up_args)}` failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield
    finally:
        pids = Supervisor(settings).pid_file_pids()
        stopped = run_stack_cli("down")
        status = run_stack_cli("status")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert status.returncode != 0, status.stdout
        assert Supervisor.leftovers(pids) == []


@pytest.fixture(scope="session")
def stack_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``stack_cli("up", env=...)`` runs ``python -m stack up`` and returns the completed process."""
    return run_stack_cli


@pytest.fixture(scope="session")
def local_stack() -> Iterator[StackSettings]:
    """Start the local stack from a fresh ``.coach-test`` on test ports; stop it at the end of the session.

    The ``COACH_*`` variables stay in ``os.environ`` for the session, so settings read by the code under test (and
    by subprocesses) point at this stack. Teardown asserts that ``down`` succeeds, ``status`` then reports the stack
    down, and no engine process (pids from the pid files, and their process groups) is left.
    """
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TEST_STACK_ENV.items():
            patch.setenv(key, value)
        settings = StackSettings()
        with stack_running(settings):
            yield settings


@pytest.fixture(scope="session")
def migrated_stack(local_stack: StackSettings) -> PlatformSettings:
    """The local stack after ``coach migrate`` (topics, PostgreSQL and ClickHouse migrations); returns the
    platform settings pointing at it."""
    from rich.console import Console

    from coach.migrations import run_migrations

    settings = PlatformSettings()
    console = Console(record=True)
    assert run_migrations(console, settings=settings), console.export_text()
    return settings


@pytest.fixture(scope="session")
def projections_platform(local_stack: StackSettings) -> PlatformSettings:
    """The local stack with what ``coach migrate`` does for the projections (topics, PostgreSQL migrations, the
    Debezium connector); returns the platform settings pointing at it. For the projector and CDC tests."""
    from tests.projection_fixtures import prepare_projections

    settings = PlatformSettings()
    prepare_projections(settings)
    return settings
