"""Benchmark of the progress API: latency percentiles and throughput of ``GET /v1/users/{user_id}/progress`` with
concurrent clients over about a million seeded metric rows.

Usage (with the local stack running; the COACH_* variables of the stack to use)::

    .venv/bin/python -m bench.api --learners 10000 --days 100 --clients 50 --duration 30

What it does:

1. **server** (a subprocess, because chDB is in-process and the load generator must not share the server's CPU
   time slice or GIL): a fresh chDB directory, all ClickHouse migrations, ``learners × days`` rows in
   ``submission_metrics`` (one submission a day per learner; 1,000,000 by default) and the daily, weekly and
   7-day sliding windows derived from them; then the API (``create_app``, one uvicorn worker) on a free port;
2. **keys**: ``--keyed`` learners get a bearer token (PostgreSQL of the stack); each request reads the progress of
   a random one of them with its own token (a learner reading itself);
3. **load**: ``--clients`` concurrent closed-loop clients (httpx, HTTP/1.1 keep-alive) for ``--duration`` seconds
   after ``--warmup`` seconds; every request is timed from send to the last byte of the body.

Prints one JSON document (machine, versions, parameters, results per scenario) and writes it to ``--out``.
Each ``--clients`` value runs every scenario. Scenarios: ``all`` (the default request: the three window kinds
over the ``--range-days`` before the end of the seeded period, and the summary) and ``weekly``
(``?window=weekly``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as platform_module
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATABASE = "bench_api"
SEED_START = datetime(2024, 1, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(args: argparse.Namespace) -> None:
    """The server subprocess: seed chDB, then serve the API until SIGTERM/SIGINT."""
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings
    from clickhouse import SQL_DIR
    from runtime.clickhouse import get_clickhouse_client
    from runtime.settings import PlatformSettings
    from runtime.sql_migrations import apply_clickhouse
    from tests.analytics_fixtures import derive_windows, seed_submission_metrics

    platform = PlatformSettings(clickhouse_url=f"chdb://{args.chdb}", clickhouse_database=DATABASE)
    client = get_clickhouse_client(platform)
    apply_clickhouse(client, SQL_DIR, DATABASE)
    started = time.perf_counter()
    rows = seed_submission_metrics(client, DATABASE, users=args.learners, days=args.days, start=SEED_START)
    seeded = time.perf_counter()
    windows = derive_windows(client, DATABASE)
    client.command(f"OPTIMIZE TABLE {DATABASE}.learner_metrics_windows FINAL")
    client.command(f"OPTIMIZE TABLE {DATABASE}.submission_metrics FINAL")
    derived = time.perf_counter()
    print(
        json.dumps(
            {
                "submission_metrics_rows": rows,
                "window_rows": windows,
                "seed_s": round(seeded - started, 1),
                "derive_and_optimize_s": round(derived - seeded, 1),
            }
        ),
        flush=True,
    )
    settings = ApiSettings(clickhouse_pool_size=args.pool, pg_pool_max=args.pool * 2)
    config = uvicorn.Config(
        create_app(platform, settings), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run()


def _create_keys(count: int) -> list[tuple[str, str]]:
    import psycopg

    from projections import SQL_DIR
    from runtime.principals import create_api_key
    from runtime.settings import PlatformSettings
    from runtime.sql_migrations import apply_postgres

    with psycopg.connect(PlatformSettings().postgres_dsn, autocommit=True) as conn:
        apply_postgres(conn, SQL_DIR)
        with conn.transaction():
            return [(f"learner-{i}", create_api_key(conn, f"learner-{i}", "learner")) for i in range(count)]


async def _load(
    base_url: str, keys: list[tuple[str, str]], params: dict[str, Any], clients: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sizes: list[int] = []
    rng = random.Random(7)
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(http: httpx.AsyncClient) -> None:
        while (now := time.perf_counter()) < stop_at:
            user, token = keys[rng.randrange(len(keys))]
            sent = time.perf_counter()
            try:
                response = await http.get(
                    f"/v1/users/{user}/progress", params=params, headers={"Authorization": f"Bearer {token}"}
                )
                ok = response.status_code == 200
                label = str(response.status_code)
            except httpx.HTTPError as exc:
                ok, label = False, type(exc).__name__
            done = time.perf_counter()
            if now >= measure_from:
                if ok:
                    latencies.append(done - sent)
                    sizes.append(len(response.content))
                else:
                    errors[label] = errors.get(label, 0) + 1

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / duration_s, 1),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
        },
        "response_bytes_median": int(statistics.median(sizes)) if sizes else 0,
    }


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform_module.platform(),
        "python": platform_module.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def _versions() -> dict[str, str]:
    names = ("fastapi", "starlette", "uvicorn", "pydantic", "chdb", "clickhouse-connect", "psycopg", "httpx")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed and start the server subprocess, create keys, run each scenario, stop the server."""
    keys = _create_keys(min(args.keyed, args.learners))
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        command = [
            sys.executable, "-m", "bench.api", "serve", "--chdb", str(Path(tmp) / "chdb"), "--port", str(port),
            "--learners", str(args.learners), "--days", str(args.days), "--pool", str(args.pool),
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            seeding = json.loads(server.stdout.readline() or "{}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"API server did not become ready (exit {server.poll()})")
                time.sleep(0.2)
            end = SEED_START + timedelta(days=args.days)
            span = {"from": (end - timedelta(days=args.range_days)).isoformat(), "to": end.isoformat()}
            scenarios = {"all": dict(span), "weekly": {**span, "window": "weekly"}}
            results = {}
            for clients in args.clients:
                for name in args.scenarios:
                    result = asyncio.run(
                        _load(f"http://127.0.0.1:{port}", keys, scenarios[name], clients, args.warmup, args.duration)
                    )
                    results[f"{name}, {clients} clients"] = {"clients": clients, "params": scenarios[name], **result}
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    return {
        "benchmark": "progress API, GET /v1/users/{user_id}/progress",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": _versions(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.api", *sys.argv[1:]]),
        "parameters": {
            "learners": args.learners,
            "days": args.days,
            "keyed_learners": len(keys),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "range_days": args.range_days,
            "clickhouse_pool": args.pool,
            "clickhouse": "embedded chDB (in the API process)",
        },
        "seeding": seeding,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    server = sub.add_parser("serve", help="internal: the server subprocess")
    server.add_argument("--chdb", required=True)
    server.add_argument("--port", type=int, required=True)
    for p in (parser, server):
        p.add_argument("--learners", type=int, default=10_000, help="learners seeded (one submission a day each)")
        p.add_argument("--days", type=int, default=100, help="days seeded")
        p.add_argument(
            "--pool", type=int, default=4, help="ClickHouse clients of the API (COACH_API_CLICKHOUSE_POOL_SIZE)"
        )
    parser.add_argument("--keyed", type=int, default=1000, help="learners that get a token and are queried")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[50], help="concurrent closed-loop clients (one run per value)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per scenario")
    parser.add_argument("--range-days", type=int, default=91, help="'from'..'to' span of the requests, days")
    parser.add_argument("--scenarios", nargs="+", default=["all", "weekly"], choices=["all", "weekly"])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
        return
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
