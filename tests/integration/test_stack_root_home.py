"""``coach stack up`` as root from a clone under a 0700 directory (issue 16, item 7): PostgreSQL, which runs as an
unprivileged OS user, cannot reach ``COACH_HOME/postgres`` there, so its data directory and socket go to
``/var/lib/coach-postgres/<hash of COACH_HOME>`` (recorded in ``stack.json``). ``up`` says so, ``status`` and ``down``
find the cluster, and nothing of it runs afterwards.

The stack runs through the project's own command (``python -m stack``) on ports of its own (the test session's plus
500) in a fresh 0700 directory under /tmp; it is removed at the end, with the relocated directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from stack.postgres import RELOCATION_ROOTS, STATE_KEY, relocated_dir_for
from stack.settings import StackSettings
from stack.supervisor import Supervisor
from tests.conftest import TEST_STACK_ENV, run_stack_cli

pytestmark = pytest.mark.integration

#: Added to the test session's ports, so this stack runs beside the session's.
PORT_SHIFT = 500
PORT_KEYS = ("COACH_KAFKA_PORT", "COACH_KAFKA_CONTROLLER_PORT", "COACH_CONNECT_PORT", "COACH_PG_PORT")


@pytest.mark.skipif(os.geteuid() != 0, reason="the relocation happens only when running as root (PostgreSQL's OS user)")
def test_stack_up_as_root_under_a_0700_directory_relocates_postgres() -> None:
    outer = Path(tempfile.mkdtemp(prefix="coach-0700-", dir="/tmp"))
    os.chmod(outer, 0o700)
    home = outer / "clone" / ".coach"
    env = {
        **os.environ,
        **TEST_STACK_ENV,
        **{key: str(int(TEST_STACK_ENV[key]) + PORT_SHIFT) for key in PORT_KEYS},
        "COACH_HOME": str(home),
        "COLUMNS": "400",  # rich folds the status table's detail column at the default 80 columns
    }
    env.pop("COACH_PG_OS_USER", None)
    settings = StackSettings(home=home, pg_port=int(env["COACH_PG_PORT"]))
    relocated = relocated_dir_for(RELOCATION_ROOTS[0], settings.home)
    assert not relocated.exists(), f"{relocated} left over from an earlier run"
    pids: dict[str, int] = {}
    try:
        up = run_stack_cli("up", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"data in {relocated / 'data'}" in up.stdout, up.stdout  # `up` says where the data went
        state = json.loads(settings.state_path.read_text())
        assert state[STATE_KEY] == str(relocated)
        assert (relocated / "data" / "PG_VERSION").is_file()
        assert not (settings.postgres_dir / "data").exists()
        with psycopg.connect(settings.pg_dsn, connect_timeout=10) as conn:
            data_directory = conn.execute("SHOW data_directory").fetchone()
            wal_level = conn.execute("SHOW wal_level").fetchone()
        assert data_directory == (str(relocated / "data"),)
        assert wal_level == ("logical",)
        assert "database system is ready" in (settings.logs_dir / "postgres.log").read_text()  # log under the home

        status = run_stack_cli("status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"data in {relocated / 'data'}" in status.stdout

        pids = Supervisor(settings).pid_file_pids()
        assert "postgres" in pids
        down = run_stack_cli("down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "PostgreSQL: stopped" in down.stdout, down.stdout
        after = run_stack_cli("status", env=env)
        assert after.returncode != 0, after.stdout
        assert Supervisor.leftovers(pids) == []
        assert not (relocated / "data" / "postmaster.pid").exists()
    finally:
        run_stack_cli("down", env=env)
        leftovers = Supervisor.leftovers(pids) if pids else []
        shutil.rmtree(outer, ignore_errors=True)
        shutil.rmtree(relocated, ignore_errors=True)
        for root in RELOCATION_ROOTS:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
    assert leftovers == []
