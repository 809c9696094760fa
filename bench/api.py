"""Benchmark of the progress API: latency percentiles and throughput of ``GET /v1/users/{user_id}/progress`` with
concurrent clients over about a million seeded metric rows.

Usage (with the local stack running; the COACH_* variables of the stack to use)::

    .venv/bin/python -m bench.api --learners 10000 --days 100 --clients 50 --duration 30

What it does:

1. **server** (a subprocess, because chDB is in-process and the load generator must not share the server's CPU
   time slice or GIL): a fresh chDB directory, all ClickHouse migrations, ``learners × days`` rows in
   ``submission_metrics`` (one submission a day per learner; 1,000,000 by default) and the daily, weekly and
   7-day sliding windows derived from them; then the API (``create_app``, one process, uvicorn, as
   ``coach serve api``) on a free port;
2. **keys**: ``--keyed`` learners get a bearer token (PostgreSQL of the stack); each request reads the progress of
   a random one of them with its own token (a learner reading itself);
3. **load**: ``--clients`` concurrent closed-loop clients (HTTP/1.1 keep-alive) for ``--duration`` seconds after
   ``--warmup`` seconds; every request is timed from send to the last byte of the body. The clients are ``wrk``
   connections (``--load-generator wrk``, the default when Debian's ``wrk`` is installed, as ``stack/bootstrap.sh``
   does; a Lua script picks the learner and its token per request) or Python threads with ``http.client``
   (``--load-generator http.client``). On 2 cores the load generator competes with the server for CPU: each scenario
   reports its load generator's CPU seconds per second and the server's. ``cold`` always uses http.client (each
   keyed learner read exactly once).

The server is uvicorn, with ``--http``/``--loop`` choosing its protocol and loop (default ``auto``: httptools and
uvloop when installed); ``stats`` of the server also reports its garbage collector's runs and longest pause per
scenario (a full collection stops the event loop).

With the per-learner progress cache (the default; ``--no-cache`` sets ``COACH_API_PROGRESS_CACHE_MAX_BYTES=0``)
the scenarios are, in this order:

* ``cold``: the cache is emptied, then the clients read every keyed learner exactly once (shuffled): every request
  is a first read, i.e. a ClickHouse read (no warmup);
* ``warm``: random keyed learners, all cached by ``cold`` (run ``cold`` first);
* ``write``: as ``warm`` while a writer in the server process replaces one daily window (inside the requested
  range, newer ``computed_at``, a marker ``word_count``) of ``--write-learners`` random keyed learners every
  ``--write-every`` seconds with one INSERT (as the dataflow's sink does); after each insert a checker reads one of
  those learners until its marker shows and records the lag (insert returned → first read showing it);
* ``gzip`` / ``write-gzip``: ``warm`` / ``write`` with ``Accept-Encoding: gzip`` on every request (the body is
  gzip-compressed and remembered per learner and request by the server; wrk counts the compressed bytes);
* ``all`` / ``weekly``: the scenarios of the first version (random learners, ``all`` = the default request: three
  window kinds over ``--range-days`` and the summary; ``weekly`` = ``?window=weekly``).

Prints one JSON document (machine, versions, parameters, results per scenario, CPU seconds used per second of the
load generator and of the server) and writes it to ``--out``. Each ``--clients`` value runs every scenario.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform as platform_module
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from api.settings import ApiSettings
from bench.host import machine
from clickhouse.seed import SEED_START

REPO = Path(__file__).resolve().parents[1]
DATABASE = "bench_api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_MARKER_BASE = 10_000_000
"""Marker word counts of the writer (far above the seeded ones), so a read shows whether it saw the write."""


class _Writer:
    """The ``write`` scenario's writer and freshness checker, in the server process (chDB is in-process).

    Every ``every_s`` seconds: one INSERT of ``learners`` rows into ``learner_metrics_windows``, each replacing the
    daily window of ``day`` of a random keyed learner (same key, newer ``computed_at``, ``word_count`` = a new
    marker); then reads the first of them through the API until the marker shows (every 5 ms) and records the lag
    from the INSERT's return, seconds."""

    def __init__(self, client: Any, port: int, keys: list[tuple[str, str]], day: datetime, learners: int) -> None:
        self._client, self._port, self._keys, self._day, self._learners = client, port, keys, day, learners
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lags: list[float] = []
        self.inserts = self.rows = 0
        self.insert_s: list[float] = []

    def start(self, every_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        lags = sorted(self.lags)
        return {
            "inserts": self.inserts,
            "rows": self.rows,
            "insert_ms_p50": round(statistics.median(self.insert_s) * 1000, 1) if self.insert_s else None,
            "checked": len(lags),
            "visible_after_ms": {
                "p50": round(lags[len(lags) // 2] * 1000, 1) if lags else None,
                "p90": round(lags[int(len(lags) * 0.9)] * 1000, 1) if lags else None,
                "max": round(lags[-1] * 1000, 1) if lags else None,
            },
        }

    def _run(self, every_s: float) -> None:
        table = f"{DATABASE}.learner_metrics_windows"
        sql = f"""INSERT INTO {table}
            SELECT * REPLACE (toUInt64({{marker:UInt64}}) AS word_count, now64(6) AS computed_at)
            FROM {table} FINAL
            WHERE user_id IN {{users:Array(String)}} AND window_kind = 'daily'
              AND window_start = fromUnixTimestamp64Milli({{day_ms:Int64}}, 'UTC')"""
        rng = random.Random(11)
        day_ms = int(self._day.timestamp() * 1000)
        with httpx.Client(base_url=f"http://127.0.0.1:{self._port}", timeout=30) as http:
            while not self._stop.wait(every_s):
                picked = rng.sample(self._keys, self._learners)
                marker = _MARKER_BASE + self.inserts
                started = time.perf_counter()
                self._client.command(
                    sql, parameters={"marker": marker, "users": [u for u, _ in picked], "day_ms": day_ms}
                )
                done = time.perf_counter()
                self.inserts, self.rows = self.inserts + 1, self.rows + len(picked)
                self.insert_s.append(done - started)
                user, token = picked[0]
                params = {
                    "window": "daily",
                    "from": self._day.isoformat(),
                    "to": (self._day + timedelta(days=1)).isoformat(),
                }
                while not self._stop.is_set():
                    body = http.get(
                        f"/v1/users/{user}/progress", params=params, headers={"Authorization": f"Bearer {token}"}
                    ).json()
                    if any(p["word_count"] == marker for p in body["series"]["daily"]):
                        self.lags.append(time.perf_counter() - done)
                        break
                    time.sleep(0.005)


class _GcWatch:
    """Counts the cyclic garbage collector's runs per generation in this process and their longest pause (a
    full collection stops the event loop for as long as it takes: a latency tail)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._lock = threading.Lock()
        self._runs = [0, 0, 0]
        self._max_ms = [0.0, 0.0, 0.0]
        self._total_ms = [0.0, 0.0, 0.0]

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation, spent = info["generation"], (time.perf_counter() - self._started) * 1000
        with self._lock:
            self._runs[generation] += 1
            self._total_ms[generation] += spent
            self._max_ms[generation] = max(self._max_ms[generation], spent)

    def take(self) -> dict[str, Any]:
        """Runs, total and longest pause (ms) per generation since the last call; then starts over."""
        with self._lock:
            out = {
                f"gen{g}": {
                    "runs": self._runs[g],
                    "total_ms": round(self._total_ms[g], 1),
                    "max_ms": round(self._max_ms[g], 1),
                }
                for g in range(3)
            }
            self._runs, self._max_ms, self._total_ms = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        return out


def serve(args: argparse.Namespace) -> None:
    """The server subprocess: seed chDB, then serve the API until SIGTERM/SIGINT. Commands on stdin (one per
    line, answered with one JSON line on stdout): ``clear`` (empty the progress cache), ``stats``,
    ``write <every_s> <learners>`` (start the writer), ``stop-write`` (stop it; answers its numbers)."""
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings
    from clickhouse import SQL_DIR
    from clickhouse.seed import derive_windows, seed_submission_metrics
    from runtime.clickhouse import get_clickhouse_client
    from runtime.settings import PlatformSettings
    from runtime.sql_migrations import apply_clickhouse

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
    settings = ApiSettings(
        host="127.0.0.1",
        port=args.port,
        clickhouse_pool_size=args.pool,
        pg_pool_max=args.pool * 2,
        progress_cache_max_bytes=ApiSettings().progress_cache_max_bytes if args.cache else 0,
    )
    app = create_app(platform, settings)
    keys = [tuple(k) for k in json.loads(Path(args.keys_file).read_text())]
    gc_watch = _GcWatch()
    day = SEED_START + timedelta(days=args.days - 2)
    writer: list[_Writer] = []

    def commands() -> None:
        for line in sys.stdin:
            words = line.split()
            answer: dict[str, Any] = {"ok": True}
            if words[:1] == ["clear"]:
                app.state.progress_cache.clear()
            elif words[:1] == ["stats"]:
                answer = {**app.state.progress_cache.stats(), "gc": gc_watch.take(), "gc_threshold": gc.get_threshold()}
            elif words[:1] == ["write"]:
                writer[:] = [_Writer(client, args.port, keys, day, int(words[2]))]  # type: ignore[arg-type]
                writer[0].start(float(words[1]))
            elif words[:1] == ["stop-write"]:
                answer = writer[0].stop()
            print(json.dumps(answer), flush=True)

    threading.Thread(target=commands, daemon=True).start()
    gc_watch.start()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, http=args.http, loop=args.loop
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


@dataclass(frozen=True)
class LoadRun:
    """One load-generator run of a scenario: ``clients`` closed-loop clients ask ``base_url`` (``http://host:port``)
    for the progress of ``keys`` (``(user_id, bearer token)``) with the query ``params``, ``warmup_s`` seconds
    unmeasured, then ``duration_s`` seconds measured."""

    base_url: str
    keys: list[tuple[str, str]]
    params: dict[str, Any]
    clients: int
    warmup_s: float
    duration_s: float


def _load(
    run: LoadRun,
    *,
    once: bool = False,
) -> dict[str, Any]:
    """``run.clients`` closed-loop clients (one thread and one keep-alive ``http.client`` connection each: the
    standard library's C-buffered body reads cost the load generator far less CPU per 135 KB response than httpx,
    which saturated a core at ~90 req/s here); with ``once`` they read each of ``run.keys`` exactly once
    (shuffled), no warmup, until all are read; else random keys for ``run.warmup_s`` + ``run.duration_s`` (only
    the latter measured).
    A request is timed from sending to the last byte of the body."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sizes: list[int] = []
    rng = random.Random(7)
    pending = rng.sample(run.keys, len(run.keys)) if once else []
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from, stop_at = (
        (start, float("inf")) if once else (start + run.warmup_s, start + run.warmup_s + run.duration_s)
    )
    url = httpx.URL(run.base_url)
    query = httpx.QueryParams(run.params)

    def client_loop(seed: int) -> None:
        local = random.Random(seed)
        conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
        while (now := time.perf_counter()) < stop_at:
            if once:
                with lock:
                    if not pending:
                        break
                    user, token = pending.pop()
            else:
                user, token = run.keys[local.randrange(len(run.keys))]
            sent = time.perf_counter()
            try:
                conn.request("GET", f"/v1/users/{user}/progress?{query}", headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                body = response.read()
                ok, label = response.status == 200, str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                ok, label, body = False, type(exc).__name__, b""
                conn.close()
                conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
            done = time.perf_counter()
            if now >= measure_from:
                with lock:
                    if ok:
                        latencies.append(done - sent)
                        sizes.append(len(body))
                    else:
                        errors[label] = errors.get(label, 0) + 1
        conn.close()

    cpu = time.process_time()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(run.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start if once else run.duration_s
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 1),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
        },
        "response_bytes_median": int(statistics.median(sizes)) if sizes else 0,
        "load_generator": f"http.client ({run.clients} threads)",
        "load_generator_cpu_s_per_s": round((time.process_time() - cpu) / (time.perf_counter() - start), 2),
    }


_WRK_LUA = """
local keys = {%(keys)s}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  math.randomseed(%(seed)d + 7919 * (id or 0))
end
local gzip = %(gzip)s
function request()
  local k = keys[math.random(#keys)]
  if gzip then
    return wrk.format("GET", k[1], {["Authorization"] = k[2], ["Accept-Encoding"] = "gzip"})
  end
  return wrk.format("GET", k[1], {["Authorization"] = k[2]})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"bytes\\": %%d, \\"errors\\": {\\"connect\\": %%d, "
    .. "\\"read\\": %%d, \\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d}, \\"p50\\": %%d, \\"p90\\": %%d, "
    .. "\\"p99\\": %%d, \\"max\\": %%d, \\"mean\\": %%f}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def _load_wrk(
    run: LoadRun,
    *,
    threads: int = 1,
    gzip: bool = False,
) -> dict[str, Any]:
    """``run.clients`` closed-loop connections of ``wrk`` (Debian's ``wrk`` 4.1, C, HTTP/1.1 keep-alive;
    ``threads`` event-loop threads), each request to a random one of ``run.keys`` with its own bearer token (a Lua
    script), and with ``gzip`` an ``Accept-Encoding: gzip`` header (wrk does not decompress: the bytes are the
    compressed ones): ``run.warmup_s`` seconds unmeasured (one wrk run), then ``run.duration_s`` measured (another).
    Latency is wrk's, from writing the request to the end of the response (microsecond histogram); wrk reports
    p50/p90/p99/max/mean. Requests answered with a status >= 400 are counted as ``errors.status`` (wrk still times
    them); a request not answered within 30 s is a timeout (not timed). ``load_generator_cpu_s_per_s``: wrk's
    user + system CPU seconds per second of the measured run (``getrusage`` of the child)."""
    query = httpx.QueryParams(run.params)
    entries = ", ".join(
        "{" + json.dumps(f"/v1/users/{user}/progress?{query}") + ", " + json.dumps(f"Bearer {token}") + "}"
        for user, token in run.keys
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-api-", delete=False) as script:
        script.write(_WRK_LUA % {"keys": entries, "seed": 7, "gzip": "true" if gzip else "false"})
    try:

        def wrk(seconds: float) -> tuple[str, float, float]:
            command = [
                "wrk", "-t", str(threads), "-c", str(run.clients), "-d", f"{max(1, round(seconds))}s",
                "--timeout", "30s", "-s", script.name, run.base_url,
            ]  # fmt: skip
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return done.stdout, elapsed, cpu

        if run.warmup_s > 0:
            wrk(run.warmup_s)
        out, elapsed, cpu = wrk(run.duration_s)
    finally:
        os.unlink(script.name)
    line = next((line for line in out.splitlines() if line.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out[-2000:]}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    seconds = raw["duration_us"] / 1e6
    errors = {name: count for name, count in raw["errors"].items() if count}
    ok = raw["requests"] - raw["errors"]["status"]
    return {
        "requests": ok,
        "errors": errors,
        "seconds": round(seconds, 1),
        "throughput_rps": round(ok / seconds, 1),
        "latency_ms": {
            "p50": round(raw["p50"] / 1000, 1),
            "p90": round(raw["p90"] / 1000, 1),
            "p99": round(raw["p99"] / 1000, 1),
            "max": round(raw["max"] / 1000, 1),
            "mean": round(raw["mean"] / 1000, 1),
        },
        "response_bytes_mean_with_headers": round(raw["bytes"] / raw["requests"]) if raw["requests"] else 0,
        "load_generator": f"wrk ({threads} thread{'s' if threads > 1 else ''})",
        "load_generator_cpu_s_per_s": round(cpu / elapsed, 2),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> dict[str, Any]:
    """The machine facts of :func:`bench.host.machine`, the Python version and the load average now."""
    return {**machine(), "python": platform_module.python_version(), "load_average_at_start": os.getloadavg()}


def _versions() -> dict[str, str]:
    names = (
        "fastapi", "starlette", "uvicorn", "httptools", "uvloop", "h11", "pydantic", "chdb",
        "clickhouse-connect", "psycopg", "httpx", "cachetools",
    )  # fmt: skip
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    wrk = shutil.which("wrk")
    if wrk:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        out["wrk"] = (done.stdout or done.stderr).split("Copyright")[0].strip()
    return out


def _resolved(choice: str, module: str, fallback: str) -> str:
    """What uvicorn's ``auto`` picks: ``module`` when importable, else ``fallback``; an explicit choice as is."""
    if choice != "auto":
        return choice
    try:
        __import__(module)
    except ImportError:
        return fallback
    return module


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed and start the server subprocess, create keys, run each scenario, stop the server."""
    keys = _create_keys(min(args.keyed, args.learners))
    port = _free_port()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        keys_file = Path(tmp) / "keys.json"
        keys_file.write_text(json.dumps(keys))
        command = [
            sys.executable, "-m", "bench.api", "serve", "--chdb", str(Path(tmp) / "chdb"), "--port", str(port),
            "--learners", str(args.learners), "--days", str(args.days), "--pool", str(args.pool),
            "--keys-file", str(keys_file), "--cache" if args.cache else "--no-cache", "--http", args.http,
            "--loop", args.loop,
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdin is not None and server.stdout is not None

        def ask(line: str) -> dict[str, Any]:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(line + "\n")
            server.stdin.flush()
            answer: dict[str, Any] = json.loads(server.stdout.readline())
            return answer

        try:
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
            params = {"all": dict(span), "weekly": {**span, "window": "weekly"}}
            base = f"http://127.0.0.1:{port}"
            results = {}
            for clients in args.clients:
                for name in args.scenarios:
                    load = os.getloadavg()[0]
                    server_cpu = _cpu_s(server.pid)
                    extra: dict[str, Any] = {}
                    query = params["weekly" if name == "weekly" else "all"]
                    if args.cache:
                        ask("stats")  # starts the garbage collector's counts of this scenario
                    if name == "cold":
                        ask("clear")
                        result = _load(LoadRun(base, keys, query, clients, 0, 0), once=True)
                    else:
                        writes, gzip = name.startswith("write"), name.endswith("gzip")
                        if writes:
                            ask(f"write {args.write_every} {args.write_learners}")
                        run = LoadRun(base, keys, query, clients, args.warmup, args.duration)
                        if args.load_generator == "wrk":
                            result = _load_wrk(run, threads=args.wrk_threads, gzip=gzip)
                        elif gzip:
                            raise SystemExit("the gzip scenarios need --load-generator wrk")
                        else:
                            result = _load(run)
                        if writes:
                            extra["writer"] = ask("stop-write")
                    spent = result["seconds"] if name == "cold" else args.warmup + args.duration
                    result["server_cpu_s_per_s"] = round((_cpu_s(server.pid) - server_cpu) / spent, 2)
                    if args.cache:
                        extra["cache_after"] = ask("stats")
                    results[f"{name}, {clients} clients"] = {
                        "clients": clients,
                        "params": query,
                        "load_average_1min_at_start": load,
                        **result,
                        **extra,
                    }
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    return {
        "benchmark": "progress API, GET /v1/users/{user_id}/progress",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**_machine(), "load_average_at_start": load_at_start},
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
            "progress_cache": args.cache,
            "server": "uvicorn",
            "uvicorn_http": _resolved(args.http, "httptools", "h11"),
            "uvicorn_loop": _resolved(args.loop, "uvloop", "asyncio"),
            "load_generator": args.load_generator,
            "api_settings": {
                name: getattr(ApiSettings(), name)
                for name in ("progress_cache_stale_s", "progress_gzip_max_bytes", "gc_young_threshold")
            },
            "write_every_s": args.write_every,
            "write_learners": args.write_learners,
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
    server.add_argument("--keys-file", required=True)
    for p in (parser, server):
        p.add_argument("--learners", type=int, default=10_000, help="learners seeded (one submission a day each)")
        p.add_argument("--days", type=int, default=100, help="days seeded")
        p.add_argument(
            "--pool", type=int, default=4, help="ClickHouse clients of the API (COACH_API_CLICKHOUSE_POOL_SIZE)"
        )
        p.add_argument(
            "--http",
            default="auto",
            choices=["auto", "h11", "httptools"],
            help="uvicorn's HTTP protocol (auto: httptools when installed, as `coach serve api`)",
        )
        p.add_argument(
            "--loop",
            default="auto",
            choices=["auto", "asyncio", "uvloop"],
            help="uvicorn's event loop (auto: uvloop when installed, as `coach serve api`)",
        )
        p.add_argument(
            "--cache",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="the per-learner progress cache (--no-cache: COACH_API_PROGRESS_CACHE_MAX_BYTES=0)",
        )
    parser.add_argument("--keyed", type=int, default=1000, help="learners that get a token and are queried")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[50], help="concurrent closed-loop clients (one run per value)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per scenario")
    parser.add_argument("--range-days", type=int, default=91, help="'from'..'to' span of the requests, days")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["cold", "warm", "gzip", "write", "write-gzip", "all", "weekly"],
        choices=["cold", "warm", "gzip", "write", "write-gzip", "all", "weekly"],
    )
    parser.add_argument("--write-every", type=float, default=0.5, help="write scenario: seconds between INSERTs")
    parser.add_argument("--write-learners", type=int, default=10, help="write scenario: learners per INSERT")
    parser.add_argument(
        "--load-generator",
        choices=["wrk", "http.client"],
        default="wrk" if shutil.which("wrk") else "http.client",
        help="closed-loop clients of the measured scenarios: wrk (default when installed; C, little CPU) or Python "
        "threads with http.client; 'cold' always uses http.client (each learner read exactly once)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk's event-loop threads")
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
