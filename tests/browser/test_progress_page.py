"""The learner progress page in a real browser: headless Chromium (Debian's ``chromium``) loads
``/progress/{user_id}?token=…`` from the API served by ``serve_api`` on a free local port, dumps the DOM
it rendered and takes a screenshot, saved as ``artifacts/progress-page.png``.

Chromium missing: the test installs it with ``apt-get install -y chromium`` when running as root with apt (the
bootstrap does the same), else it is skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.settings import PlatformSettings
from tests.analytics_fixtures import ApiWorld, seed_api_world, served_api

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
APT_PACKAGE = "chromium"


def _chromium() -> str:
    """Path of a Chromium binary, installing Debian's package when possible; skips the test otherwise."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"Chromium not installed and cannot install it here: run `apt-get install -y {APT_PACKAGE}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", APT_PACKAGE]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.skip(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr[-500:]}")
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(f"`apt-get install {APT_PACKAGE}` did not provide a chromium binary")
    return found


@pytest.fixture(scope="module")
def world(migrated_stack: PlatformSettings) -> ApiWorld:
    return seed_api_world(PlatformSettings(clickhouse_database="api_browser"), f"br-{uuid.uuid4().hex[:6]}-")


@pytest.fixture(scope="module")
def base_url(world: ApiWorld) -> Iterator[str]:
    """The API served by ``serve_api`` (COACH_API_SERVER's default) in a thread of this process, as ``coach run``
    serves it."""
    with served_api(world.platform) as port:
        yield f"http://127.0.0.1:{port}"


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def test_progress_page_renders_charts_in_chromium(world: ApiWorld, base_url: str, tmp_path: Path) -> None:
    chromium = _chromium()
    query = f"token={world.tokens['learner']}&from=2024-01-01T00:00:00Z&to=2024-03-01T00:00:00Z"
    url = f"{base_url}/progress/{world.learner}?{query}"
    dom = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f"Speaking progress of {world.learner}" in html
    charts = re.findall(r'<figure class="chart" id="chart-([a-z_]+)"[^>]*>\s*<svg', html)
    assert charts == ["pace", "pace_syllables", "pauses", "pause_length", "fillers", "vocabulary", "vocabulary_mtld"]
    assert html.count("<path") > 20  # the plotted lines and markers
    assert 'id="summary"' in html and 'class="improved"' in html
    assert "words per minute" in html  # axis label kept as text (svg.fonttype none)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "progress-page.png"
    screenshot.unlink(missing_ok=True)
    shot = _headless(chromium, tmp_path / "profile-shot", "--window-size=1400,2000", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_progress_page_without_token_is_refused(world: ApiWorld, base_url: str, tmp_path: Path) -> None:
    chromium = _chromium()
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", f"{base_url}/progress/{world.learner}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "missing bearer token" in dom.stdout and "<svg" not in dom.stdout
