"""The Grafana dashboards as code: the exported JSON is current, every panel's and variable's SQL runs on the
ClickHouse schema (all migrations, embedded chDB) with seeded data and returns rows, no query pastes a template
variable into SQL unescaped (statically, and with hostile values run against chDB), and the provisioning files
point at the exported dashboards, the ClickHouse plugin and the read-only ClickHouse user.

chDB opens one data directory per process and the test session may already hold another, so the SQL runs in a
subprocess on a fresh directory and reports back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.dashboards import DASHBOARDS, DASHBOARDS_DIR, build_all, sql_string, stale_dashboards
from grafana.sql_macros import FORMATS, VARIABLE, UnknownMacro, expand

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PROVISIONING = REPO / "grafana" / "provisioning"


def _targets() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel or variable title, raw SQL) of every query in the exported dashboards."""
    out = []
    for _, text in sorted(build_all().items()):
        model = json.loads(text)
        for variable in model.get("templating", {}).get("list", []):
            if variable["type"] == "query":
                out.append((model["uid"], f"variable {variable['name']}", variable["query"]))
        for panel in model["panels"]:
            for target in panel.get("targets") or []:
                out.append((model["uid"], f"{panel['title']} [{target['refId']}]", target["rawSql"]))
    return out


TARGETS = _targets()

#: Values a dashboard viewer can put into a variable (``?var-learner=...``): a plain quote breaks out of
#: ``'${learner}'``, a backslash before it also out of ``${learner:sqlstring}`` (ClickHouse reads ``\\'`` as a quote).
HOSTILE_VALUES = ("x' OR 1=1 OR '", "\\' OR 1=1 -- ", "learner-0' OR user_id != '")
#: Values decodeURLComponent(percentencode(v)) must give back unchanged.
ROUND_TRIP_VALUES = ("learner-0", "o'neil\\", "ü 100% +x", "a\nb\tc", "日本", "~._-!*()")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from clickhouse import SQL_DIR
    from grafana.sql_macros import expand
    from runtime.clickhouse import get_clickhouse_client
    from runtime.settings import PlatformSettings
    from runtime.sql_migrations import apply_clickhouse
    from tests.analytics_fixtures import derive_windows, seed_observability, seed_submission_metrics

    targets = json.loads(sys.stdin.read())
    client = get_clickhouse_client(PlatformSettings(home=sys.argv[1]))
    apply_clickhouse(client, SQL_DIR, "coach")
    seed_submission_metrics(client, "coach", users=6, days=35, start=datetime(2024, 1, 1, tzinfo=UTC))
    derive_windows(client, "coach")
    now = datetime.now(UTC).replace(microsecond=0)
    # observability rows are recent: consumer_lag has a TTL
    seed_observability(client, "coach", start=now - timedelta(hours=10), hours=8)
    variables = {"learner": "learner-0", "cohort": "spring", "window_kind": "weekly", "datasource": "ClickHouse"}
    ranges = {
        "coach-learner-progress": (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC)),
        "coach-cohort-overview": (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC)),
    }
    hostile, round_trip = json.loads(sys.argv[2]), json.loads(sys.argv[3])

    def run(sql, uid, values):
        start, end = ranges.get(uid, (now - timedelta(days=1), now))
        rows = client.query(expand(sql, start, end, values, interval_s=3600), settings={"readonly": 1})
        return rows

    results = {}
    for uid, title, sql in targets:
        try:
            rows = run(sql, uid, variables)
            results[f"{uid}|{title}"] = {"rows": len(rows.result_rows), "columns": list(rows.column_names)}
        except Exception as exc:
            results[f"{uid}|{title}"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            continue
        # Hostile values must select exactly what a value matching nothing selects (and not fail).
        nobody = {**variables, "learner": "nobody", "cohort": "nobody", "window_kind": "nobody"}
        expected = repr(run(sql, uid, nobody).result_rows)
        outcome = {}
        for value in hostile:
            values = {**variables, "learner": value, "cohort": value, "window_kind": value}
            try:
                got = repr(run(sql, uid, values).result_rows)
                outcome[value] = "same" if got == expected else f"differs: {got[:300]} vs {expected[:300]}"
            except Exception as exc:
                outcome[value] = f"error: {type(exc).__name__}: {exc}"[:500]
        results[f"{uid}|{title}"]["hostile"] = outcome
    from urllib.parse import quote
    results["round_trip"] = [
        client.query(f"SELECT decodeURLComponent('{quote(v, safe='')}')").result_rows[0][0] for v in round_trip
    ]
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("grafana-chdb")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), json.dumps(HOSTILE_VALUES), json.dumps(ROUND_TRIP_VALUES)],
        input=json.dumps(TARGETS),
        cwd=REPO,
        # chDB opens one data directory per process, and this session's is locked: the child gets its own.
        env={**os.environ, "COACH_CLICKHOUSE_URL": f"chdb://{home}/chdb"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exported_dashboards_are_current() -> None:
    assert stale_dashboards() == [], "run `coach grafana export` and commit grafana/dashboards/"
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(f"{uid}.json" for uid in DASHBOARDS)


def test_stale_detection(tmp_path: Path) -> None:
    for name, text in build_all().items():
        (tmp_path / name).write_text(text)
    assert stale_dashboards(tmp_path) == []
    first = sorted(build_all())[0]
    (tmp_path / first).write_text("{}")
    (tmp_path / "old.json").write_text("{}")
    assert stale_dashboards(tmp_path) == [first, "old.json"]


def test_every_dashboard_has_panels_on_the_datasource_variable() -> None:
    for name, text in build_all().items():
        model = json.loads(text)
        assert model["uid"] == name.removesuffix(".json")
        names = [v["name"] for v in model["templating"]["list"]]
        assert names[0] == "datasource"
        panels = model["panels"]
        assert len(panels) >= 6
        assert len({p["id"] for p in panels}) == len(panels)
        for panel in panels:
            assert panel["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
            assert panel["options"], panel["title"]
            assert panel["targets"] and all(t["editorType"] == "sql" and t["rawSql"] for t in panel["targets"])


@pytest.mark.parametrize(("uid", "title", "sql"), TARGETS, ids=[f"{u}:{t}" for u, t, _ in TARGETS])
def test_panel_sql_returns_rows(results: dict[str, Any], uid: str, title: str, sql: str) -> None:
    outcome = results[f"{uid}|{title}"]
    assert "error" not in outcome, f"{outcome.get('error')}\n---\n{sql}"
    assert outcome["rows"] > 0, f"no rows\n---\n{sql}"


def test_no_query_interpolates_a_string_variable_unescaped() -> None:
    """Every template variable in a query is one of the dashboards' escaped forms
    (``decodeURLComponent('${name:percentencode}')``, see :func:`grafana.dashboards.sql_string`); no ``'${name}'``,
    ``$name``, ``${name:sqlstring}`` or other format is left."""
    offenders = []
    for uid, title, sql in TARGETS:
        names = {m.group(1) or m.group(3) for m in VARIABLE.finditer(sql)}
        rest = sql
        for name in names:
            rest = rest.replace(sql_string(name), "")
        offenders += [f"{uid} / {title}: {m.group(0)}" for m in VARIABLE.finditer(rest)]
    assert not offenders, "unescaped template variables:\n" + "\n".join(offenders)
    assert any(sql_string("learner") in sql for _, _, sql in TARGETS)  # the check looks at the real queries


def test_the_check_catches_every_unescaped_form() -> None:
    for raw in ("'${learner}'", "'$learner'", "${learner:sqlstring}", "${learner:raw}", "'${learner:singlequote}'"):
        sql = f"SELECT 1 FROM t WHERE user_id = {raw} AND c = {sql_string('cohort')}"
        rest = sql.replace(sql_string("cohort"), "")
        assert [m.group(0) for m in VARIABLE.finditer(rest)], raw


def test_expand_applies_grafanas_formats() -> None:
    from datetime import UTC, datetime

    t = datetime(2024, 1, 1, tzinfo=UTC)
    value = "o'neil\\ ü"
    assert expand("${v:percentencode}", t, t, {"v": value}) == "o%27neil%5C%20%C3%BC"
    assert expand("${v:sqlstring}", t, t, {"v": value}) == "'o''neil\\ ü'"
    assert expand("${v}|$v|${v:raw}", t, t, {"v": "a"}) == "a|a|a"
    assert set(FORMATS) >= {"raw", "percentencode", "sqlstring"}
    with pytest.raises(UnknownMacro):
        expand("${v:lucene}", t, t, {"v": "a"})


def test_hostile_variable_values_select_nothing(results: dict[str, Any]) -> None:
    """Each hostile value, put into every variable, selects what a value matching nothing selects, without an
    error: it stays one string literal (on the old ``'${learner}'`` form the quote ended the literal)."""
    bad = {
        f"{key}: {value!r}": outcome
        for key, result in results.items()
        if key != "round_trip"
        for value, outcome in result.get("hostile", {}).items()
        if outcome != "same"
    }
    assert not bad, bad
    checked = {
        key
        for key, result in results.items()
        if key != "round_trip" and len(result.get("hostile", {})) == len(HOSTILE_VALUES)
    }
    assert checked == {f"{uid}|{title}" for uid, title, _ in TARGETS}


def test_percent_encoded_values_decode_back_in_clickhouse(results: dict[str, Any]) -> None:
    assert results["round_trip"] == list(ROUND_TRIP_VALUES)


def test_time_series_panels_return_a_time_column(results: dict[str, Any]) -> None:
    for name, text in build_all().items():
        model = json.loads(text)
        for panel in model["panels"]:
            if panel["type"] != "timeseries":
                continue
            for target in panel["targets"]:
                outcome = results[f"{model['uid']}|{panel['title']} [{target['refId']}]"]
                assert outcome.get("columns", [None])[0] == "time", (name, panel["title"])


def test_provisioning_points_at_the_plugin_and_the_exported_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["defaultDatabase"] == "coach"
    # the read-only ClickHouse user of docker-compose.yml, not the admin
    assert source["jsonData"]["username"] == "${COACH_GRAFANA_CLICKHOUSE_USER}"
    assert source["secureJsonData"]["password"] == "${COACH_GRAFANA_CLICKHOUSE_PASSWORD}"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "coach.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    environment = compose["services"]["grafana"]["environment"]
    assert environment["COACH_GRAFANA_CLICKHOUSE_USER"] == "grafana"
    assert environment["COACH_GRAFANA_CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_GRAFANA_PASSWORD:?")
