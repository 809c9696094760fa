"""``coach demo``: the whole local pipeline on bundled real and synthesized speech, then each learner's progress.

Steps: start the local stack → migrate → create learners and their API keys → start every service
in this process (``coach run``'s set) → upload the JFK clip and synthesized answers (recorded over
several weeks) through the ingestion API → wait until every submission has its transcript, feedback,
PostgreSQL projection and ClickHouse metrics (read back through the progress API) → print each
learner's progress and weekly windows and write a chart → stop the services and the stack. Any
failure is explained in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.settings import ApiSettings
from coach.demo_script import LEARNERS, synthesize
from coach.migrations import run_migrations
from coach.services import ServiceSet, local_services
from ingestion.settings import IngestionSettings
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import FEEDBACK, TRANSCRIPTS

__all__ = ["DemoFailed", "run_demo"]

BUNDLED_CLIP = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio" / "jfk.flac"


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message says what to do."""


def _stack(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "stack", command], check=False)
    if result.returncode != 0:
        raise DemoFailed(
            f"`coach stack {command}` failed (see its output above and {PlatformSettings().home_dir}/logs)"
        )


def run_demo(console: Console, *, keep_stack: bool = False, timeout_s: float = 600.0) -> Path:
    """Run the demo; returns the path of the progress chart. Raises :class:`DemoFailed`."""
    settings = PlatformSettings()
    console.rule("[bold]1/6 local stack")
    _stack("up")
    services: ServiceSet | None = None
    try:
        console.rule("[bold]2/6 migrations")
        if not run_migrations(console, settings=settings):
            raise DemoFailed("`coach migrate` failed: see the errors above")
        console.rule("[bold]3/6 learners, keys and recordings")
        tokens = _learners(settings)
        uploads = _recordings(settings, console)
        console.rule("[bold]4/6 services")
        services = ServiceSet(local_services())
        services.start()
        ingestion = IngestionSettings()
        base = f"http://{ingestion.host}:{ingestion.port}"
        _wait_ready(base, services)
        console.rule("[bold]5/6 uploads and processing")
        submitted = _upload(base, tokens, uploads, console)
        _await_events(TRANSCRIPTS.name, "transcripts", settings, submitted, services, console, timeout_s)
        feedback = _await_events(FEEDBACK.name, "feedback", settings, submitted, services, console, timeout_s)
        _await_projection(settings, submitted, services, console, timeout_s)
        api = ApiSettings()
        api_base = f"http://{api.host}:{api.port}"
        details = _await_api_metrics(api_base, tokens, submitted, services, console, timeout_s)
        console.rule("[bold]6/6 progress")
        chart = _report(console, submitted, details, feedback, settings)
        _weekly(console, api_base, tokens)
        return chart
    finally:
        if services is not None:
            alive = services.shutdown()
            if alive:
                console.print(f"[yellow]services still stopping: {alive}[/yellow]")
        if not keep_stack:
            _stack("down")


def _learners(settings: PlatformSettings) -> dict[str, str]:
    tokens = {}
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        for learner in LEARNERS:
            conn.execute(
                "INSERT INTO learners (user_id, display_name, timezone, target_level, cohort)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name,"
                " timezone = EXCLUDED.timezone, target_level = EXCLUDED.target_level, cohort = EXCLUDED.cohort,"
                " updated_at = now()",
                (learner.user_id, learner.display_name, learner.timezone, learner.target_level, learner.cohort),
            )
            tokens[learner.user_id] = create_api_key(conn, learner.user_id, "learner")
    return tokens


def _recordings(settings: PlatformSettings, console: Console) -> list[dict[str, Any]]:
    """Synthesize every answer; returns upload descriptions (user, file, prompt, recorded_at)."""
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for learner in LEARNERS:
        for answer in learner.answers:
            path = synthesize(answer, settings.home_dir / "demo" / learner.user_id / f"{answer.prompt_id}.wav")
            recorded = now - timedelta(days=answer.days_ago, hours=2)
            out.append({"user": learner.user_id, "path": path, "prompt": answer.prompt_id, "recorded_at": recorded})
        if learner.bundled_clip:
            out.append(
                {
                    "user": learner.user_id,
                    "path": BUNDLED_CLIP,
                    "prompt": "speech",
                    "recorded_at": now - timedelta(days=8),
                }
            )
    console.print(f"{len(out)} recordings ready ({len(LEARNERS)} learners)")
    return out


def _wait_ready(base: str, services: ServiceSet, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if services.failed():
            raise DemoFailed(f"service {services.failed()[0].name} failed: {services.failed()[0].error}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DemoFailed(f"the ingestion API at {base} did not become ready; is the port free? (COACH_INGESTION_PORT)")


def _upload(
    base: str, tokens: dict[str, str], uploads: list[dict[str, Any]], console: Console
) -> dict[str, dict[str, Any]]:
    submitted: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for item in uploads:
            with item["path"].open("rb") as fh:
                response = client.post(
                    "/v1/submissions",
                    files={"audio": (item["path"].name, fh)},
                    data={"prompt_id": item["prompt"], "recorded_at": item["recorded_at"].isoformat()},
                    headers={
                        "Authorization": f"Bearer {tokens[item['user']]}",
                        "Idempotency-Key": f"demo-{uuid.uuid4()}",
                    },
                )
            if response.status_code != 202:
                raise DemoFailed(f"upload of {item['path'].name} answered {response.status_code}: {response.text}")
            submitted[response.json()["submission_id"]] = item
    console.print(f"{len(submitted)} uploads accepted (202)")
    return submitted


def _check(services: ServiceSet) -> None:
    if services.failed():
        bad = services.failed()[0]
        raise DemoFailed(f"service {bad.name} failed: {bad.error}")


def _await_projection(
    settings: PlatformSettings,
    submitted: dict[str, dict[str, Any]],
    services: ServiceSet,
    console: Console,
    timeout_s: float,
) -> None:
    """Wait until the projector marked every submission 'feedback' in PostgreSQL."""
    deadline = time.monotonic() + timeout_s
    ids = list(submitted)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        while True:
            _check(services)
            rows = conn.execute(
                "SELECT status, count(*) FROM submissions WHERE submission_id = ANY(%s::uuid[]) GROUP BY status", (ids,)
            ).fetchall()
            counts: dict[str, int] = dict(rows)
            if counts.get("feedback", 0) == len(ids):
                console.print(f"projections: {len(ids)} submissions with status 'feedback' in PostgreSQL")
                return
            if time.monotonic() > deadline:
                raise DemoFailed(f"projector: statuses {counts} after {timeout_s:.0f} s; see `coach stack status`")
            time.sleep(0.5)


def _await_events(
    topic: str,
    label: str,
    settings: PlatformSettings,
    submitted: dict[str, dict[str, Any]],
    services: ServiceSet,
    console: Console,
    timeout_s: float,
) -> dict[str, dict[str, Any]]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"demo-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=len(submitted))
            while len(found) < len(submitted):
                if time.monotonic() > deadline:
                    raise DemoFailed(f"only {len(found)}/{len(submitted)} {label} after {timeout_s:.0f} s; "
                                     f"see {settings.home_dir}/logs and `coach stack status`")  # fmt: skip
                _check(services)
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                try:
                    event = json.loads(msg.value() or b"{}")
                except ValueError:
                    continue  # not ours: malformed records are the consumers' to dead-letter
                sid = event.get("submission_id") if isinstance(event, dict) else None
                if sid in submitted and sid not in found:
                    found[sid] = event
                    progress.update(task, completed=len(found))
    finally:
        consumer.close()
    return found


def _await_api_metrics(
    api_base: str,
    tokens: dict[str, str],
    submitted: dict[str, dict[str, Any]],
    services: ServiceSet,
    console: Console,
    timeout_s: float,
) -> dict[str, dict[str, Any]]:
    """Poll the progress API until every submission shows its metrics (written by the dataflow)."""
    details: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api_base, timeout=30) as client:
        while len(details) < len(submitted):
            _check(services)
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"progress API shows metrics for {len(details)}/{len(submitted)} submissions after "
                    f"{timeout_s:.0f} s (is the metrics flow running? see the log above)"
                )
            for sid, item in submitted.items():
                if sid in details:
                    continue
                try:
                    r = client.get(
                        f"/v1/submissions/{sid}", headers={"Authorization": f"Bearer {tokens[item['user']]}"}
                    )
                except httpx.HTTPError:
                    break
                if r.status_code == 200 and r.json().get("metrics"):
                    details[sid] = r.json()
            time.sleep(0.5)
    console.print(f"progress API: metrics for {len(details)} submissions (ClickHouse, via {api_base})")
    return details


def _weekly(console: Console, api_base: str, tokens: dict[str, str]) -> None:
    """Each learner's weekly windows (learner's timezone) and the change the API reports."""
    table = Table(title="weekly windows (progress API)", title_justify="left")
    for column in ("learner", "weeks", "wpm by week", "pauses/min by week", "speech rate change"):
        table.add_column(column)
    with httpx.Client(base_url=api_base, timeout=30) as client:
        for user, token in tokens.items():
            r = client.get(f"/v1/users/{user}/progress", params={"window": "weekly"},
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            if r.status_code != 200:
                raise DemoFailed(f"GET /v1/users/{user}/progress answered {r.status_code}: {r.text[:200]}")
            body = r.json()
            weeks = body["series"].get("weekly", [])
            change = next((c for c in body["summary"]["changes"] if c["metric"] == "speech_rate_wpm"), None)
            trend = "–"
            if change is not None and change["change"] is not None:
                trend = f"{change['change']:+.0f} wpm ({change['direction']})"
            table.add_row(
                user, str(len(weeks)), " → ".join(_fmt(w["speech_rate_wpm"]) for w in weeks),
                " → ".join(_fmt(w["silent_pauses_per_minute"]) for w in weeks),
                trend,
            )  # fmt: skip
    console.print(table)


def _report(
    console: Console,
    submitted: dict[str, dict[str, Any]],
    details: dict[str, dict[str, Any]],
    feedback: dict[str, dict[str, Any]],
    settings: PlatformSettings,
) -> Path:
    rows: dict[str, list[tuple[datetime, str, Any, str]]] = {}
    for sid, item in submitted.items():
        metric = SimpleNamespace(**details[sid]["metrics"])
        rows.setdefault(item["user"], []).append((item["recorded_at"], item["prompt"], metric, sid))
    for user, entries in rows.items():
        table = Table(title=f"learner {user}", title_justify="left")
        for column in ("recorded", "prompt", "words", "wpm", "art. wpm", "pauses/min", "pause s", "fillers", "reps"):
            table.add_column(column, justify="right")
        for recorded, prompt, metric, _sid in sorted(entries, key=lambda e: e[0]):
            table.add_row(
                recorded.date().isoformat(), prompt, str(metric.word_count), _fmt(metric.speech_rate_wpm),
                _fmt(metric.articulation_rate_wpm), _fmt(metric.silent_pauses_per_minute),
                _fmt(metric.mean_silent_pause_s, 2), str(metric.filled_pause_count), str(metric.repetition_count),
            )  # fmt: skip
        console.print(table)
        latest = max(entries, key=lambda e: e[0])[3]
        points = feedback[latest]["payload"]["points"]
        focus = next((p for p in points if p["kind"] == "work_on"), points[0] if points else None)
        provider = feedback[latest]["payload"]["provider"]
        if focus is not None:
            console.print(f"  latest feedback ({provider}): {focus['message']}")
    return _chart(rows, settings.home_dir / "demo" / "progress.png", console)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _chart(rows: dict[str, list[tuple[datetime, str, Any, str]]], target: Path, console: Console) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for user, entries in sorted(rows.items()):
        entries = sorted(entries, key=lambda e: e[0])
        dates = [e[0] for e in entries]
        axes[0].plot(dates, [e[2].speech_rate_wpm or 0 for e in entries], marker="o", label=user)
        axes[1].plot(dates, [e[2].silent_pauses_per_minute or 0 for e in entries], marker="o", label=user)
    axes[0].set_title("speech rate (words/min)")
    axes[1].set_title("silent pauses per minute (>= 250 ms)")
    for ax in axes:
        ax.legend()
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    console.print(f"progress chart written to {target}")
    return target
