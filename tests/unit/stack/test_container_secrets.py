"""No default secrets (issue 16, item 5), the parts that need no engine: the compose ``.env`` generator
(``coach stack compose-env``), the Debezium connector configuration without its password, the secrets file Kafka
Connect's FileConfigProvider reads, the local worker's provider settings, and the places PostgreSQL may be relocated
to (item 7)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from projections.debezium import (
    LOCAL_SECRETS_FILE,
    DebeziumSettings,
    connector_config,
    connector_password,
    connector_secrets_file,
    write_secrets_file,
)
from runtime.settings import PlatformSettings
from stack.compose_env import PASSWORD_VARIABLES, read_env_names, write_compose_env
from stack.connect import SECRETS_FILE_NAME, ConnectWorker
from stack.postgres import _safe_root, relocated_dir_for
from stack.settings import StackSettings

pytestmark = pytest.mark.unit


def _values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


# --- .env of docker-compose.yml -----------------------------------------------------------------------------


def test_compose_env_is_created_private_with_random_passwords(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    result = write_compose_env(path)
    assert result.created and set(result.added) == set(PASSWORD_VARIABLES) and result.kept == ()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = _values(path)
    assert set(values) == set(PASSWORD_VARIABLES)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in values.values()), values.keys()
    assert len(set(values.values())) == len(values)
    other = tmp_path / "other.env"
    write_compose_env(other)
    assert set(_values(other).values()).isdisjoint(values.values())


def test_compose_env_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_compose_env(path)
    before = path.read_text()
    again = write_compose_env(path)
    assert not again.created and again.added == () and set(again.kept) == set(PASSWORD_VARIABLES)
    assert path.read_text() == before


def test_compose_env_completes_an_existing_file_and_narrows_its_mode(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# mine\nPOSTGRES_PASSWORD=chosen-by-me\nexport GRAFANA_ADMIN_PASSWORD=also-mine\nOTHER=1")
    os.chmod(path, 0o644)
    result = write_compose_env(path)
    assert not result.created
    assert set(result.kept) == {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    assert set(result.added) == set(PASSWORD_VARIABLES) - set(result.kept)
    text = path.read_text()
    assert text.startswith("# mine\nPOSTGRES_PASSWORD=chosen-by-me\nexport GRAFANA_ADMIN_PASSWORD=also-mine\nOTHER=1\n")
    assert read_env_names(path) == set(PASSWORD_VARIABLES) | {"OTHER"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_coach_stack_compose_env_command(tmp_path: Path) -> None:
    from stack.cli import app

    path = tmp_path / ".env"
    first = CliRunner().invoke(app, ["compose-env", "--path", str(path)])
    assert first.exit_code == 0, first.output
    assert "created with 5 random passwords" in " ".join(first.output.split())  # rich wraps at 80 columns
    second = CliRunner().invoke(app, ["compose-env", "--path", str(path)])
    assert second.exit_code == 0 and "left unchanged" in " ".join(second.output.split())
    refused = CliRunner().invoke(app, ["compose-env", "--path", str(tmp_path / "missing" / ".env")])
    assert refused.exit_code == 1


def test_dot_env_is_ignored_by_git() -> None:
    assert ".env" in (Path(__file__).resolve().parents[3] / ".gitignore").read_text().splitlines()


# --- Debezium connector without its password ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "debezium"),
    [
        ({"pg_dsn": "postgresql://coach:s3cret-1@db:5432/coach"}, {}),
        ({"pg_dsn": "host=db port=5432 user=coach password='s3cret-1' dbname=coach"}, {}),
        ({}, {"database_password": "s3cret-1"}),
        ({"pg_dsn": "postgresql://coach:other@db/coach"}, {"database_password": "s3cret-1"}),
    ],
)
def test_connector_config_refers_to_the_password(tmp_path: Path, platform: dict, debezium: dict) -> None:
    settings = PlatformSettings(home=tmp_path, **platform)
    dbz = DebeziumSettings(**debezium)
    config = connector_config(settings, dbz)
    assert connector_password(settings, dbz) == "s3cret-1"
    assert "s3cret" not in repr(config)
    assert config["database.password"] == f"${{file:{tmp_path.resolve() / 'connect/secrets.properties'}:password}}"


def test_connector_config_without_a_password_or_with_a_named_file(tmp_path: Path) -> None:
    settings = PlatformSettings(home=tmp_path)
    assert "database.password" not in connector_config(settings, DebeziumSettings())  # trust authentication
    named = DebeziumSettings(secrets_file="/kafka/secrets/postgres.properties")
    assert connector_secrets_file(settings, named) == ("/kafka/secrets/postgres.properties", False)
    assert (
        connector_config(settings, named)["database.password"] == "${file:/kafka/secrets/postgres.properties:password}"
    )


def test_local_secrets_file_is_the_one_the_worker_may_read(tmp_path: Path) -> None:
    stack = StackSettings(home=tmp_path)
    worker = ConnectWorker(stack)
    assert worker.secrets_path == stack.home / LOCAL_SECRETS_FILE
    assert LOCAL_SECRETS_FILE.name == SECRETS_FILE_NAME and stack.connect_dir.name == LOCAL_SECRETS_FILE.parent.name
    path, local = connector_secrets_file(PlatformSettings(home=tmp_path), DebeziumSettings())
    assert local and Path(path) == worker.secrets_path
    props = dict(
        line.split("=", 1) for line in worker.worker_properties().splitlines() if line and not line.startswith("#")
    )
    assert props["config.providers"] == "file"
    assert props["config.providers.file.class"] == "org.apache.kafka.common.config.provider.FileConfigProvider"
    assert props["config.providers.file.param.allowed.paths"] == str(stack.connect_dir)


def test_worker_secrets_file_is_private_and_kept(tmp_path: Path) -> None:
    worker = ConnectWorker(StackSettings(home=tmp_path))
    worker.ensure_secrets_file()
    assert stat.S_IMODE(worker.secrets_path.stat().st_mode) == 0o600
    worker.secrets_path.write_text("password=x\n")
    os.chmod(worker.secrets_path, 0o644)
    worker.ensure_secrets_file()
    assert worker.secrets_path.read_text() == "password=x\n"
    assert stat.S_IMODE(worker.secrets_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("password", "line"),
    [
        ("plain-Pass_1", "password=plain-Pass_1"),
        ("back\\slash", "password=back\\\\slash"),
        ("two\nlines", "password=two\\nlines"),
        (" leading", "password=\\ leading"),
        ("a=b:c#d!ü", "password=a=b:c#d!ü"),
    ],
)
def test_secrets_file_is_a_private_properties_file(tmp_path: Path, password: str, line: str) -> None:
    path = tmp_path / "connect" / "secrets.properties"
    write_secrets_file(path, password)
    write_secrets_file(path, password)  # unchanged: harmless
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert line in path.read_text(encoding="utf-8").splitlines()
    assert sorted(p.name for p in path.parent.iterdir()) == ["secrets.properties"]  # no temporary file left


# --- where PostgreSQL may be relocated (item 7) --------------------------------------------------------------


def test_relocated_dir_is_one_per_home() -> None:
    root = Path("/var/lib/coach-postgres")
    assert relocated_dir_for(root, Path("/a/.coach")) == relocated_dir_for(root, Path("/a/.coach"))
    assert relocated_dir_for(root, Path("/a/.coach")) != relocated_dir_for(root, Path("/b/.coach"))
    assert relocated_dir_for(root, Path("/a/.coach")).parent == root


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned directory needs root")
def test_relocation_root_must_be_root_owned_and_not_shared(tmp_path: Path) -> None:
    good = tmp_path / "good"
    assert _safe_root(good) and stat.S_IMODE(good.stat().st_mode) & 0o022 == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    assert not _safe_root(shared)
    link = tmp_path / "link"
    link.symlink_to(good)
    assert not _safe_root(link)
