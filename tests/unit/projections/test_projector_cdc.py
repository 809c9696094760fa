"""Debezium connector configuration, consumer-side CDC deduplication, learner profiles and the AsyncAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from projections.asyncapi import DOC_PATH, asyncapi_yaml, documented_topics
from projections.cdc_dedup import CdcDeduplicator, ChangeEvent, change_key, dedup_changes
from projections.debezium import (
    CAPTURED_TABLES,
    PUBLICATION_NAME,
    SLOT_NAME,
    DebeziumSettings,
    cdc_topic,
    connector_config,
)
from projections.learners import LearnerProfile
from runtime.settings import PlatformSettings
from schemas.topics import TOPICS

pytestmark = pytest.mark.unit


def change(table: str, pk: dict[str, Any], lsn: int | None, op: str = "u", **row: Any) -> tuple[bytes, bytes]:
    value = {
        "before": None,
        "after": {**pk, **row},
        "source": {"connector": "postgresql", "db": "coach", "schema": "public", "table": table, "lsn": lsn,
                   "txId": 7, "ts_ms": 1_700_000_000_000, "snapshot": "false"},
        "op": op,
        "ts_ms": 1_700_000_000_100,
    }  # fmt: skip
    return json.dumps(pk).encode(), json.dumps(value).encode()


# --- Debezium -------------------------------------------------------------------------------------------------


def test_connector_config_captures_the_read_models_with_pgoutput() -> None:
    config = connector_config(
        PlatformSettings(pg_host="127.0.0.1", pg_port=15433, pg_user="coach", pg_database="coach"),
        DebeziumSettings(),
    )
    assert config["plugin.name"] == "pgoutput"
    assert config["slot.name"] == SLOT_NAME
    assert config["publication.name"] == PUBLICATION_NAME
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["topic.prefix"] == "cdc"
    assert config["table.include.list"].split(",") == [f"public.{t}" for t in CAPTURED_TABLES]
    assert {"learners", "submissions", "submission_timeline", "transcripts", "feedback"} <= set(CAPTURED_TABLES)
    assert "api_keys" not in CAPTURED_TABLES
    assert "debezium_heartbeat" in config["heartbeat.action.query"]
    assert int(config["heartbeat.interval.ms"]) > 0
    assert config["snapshot.mode"] == "initial"
    assert config["value.converter.schemas.enable"] == "false"
    assert config["topic.creation.default.partitions"] == "6"
    assert config["topic.creation.default.replication.factor"] == "1"
    assert (config["database.hostname"], config["database.port"]) == ("127.0.0.1", "15433")
    assert "database.password" not in config  # trust authentication
    assert all(isinstance(v, str) for v in config.values())
    assert cdc_topic("learners") == "cdc.public.learners"


def test_connect_may_reach_postgres_under_another_name() -> None:
    config = connector_config(
        PlatformSettings(pg_port=5433),
        DebeziumSettings(database_hostname="postgres", database_port=5432, database_password="s3cret"),
    )
    assert (config["database.hostname"], config["database.port"]) == ("postgres", "5432")
    assert config["database.password"].startswith("${file:") and "s3cret" not in str(config)


# --- deduplication ------------------------------------------------------------------------------------------


def test_change_key_is_lsn_table_and_primary_key() -> None:
    key, value = change("learners", {"user_id": "u1"}, 100, cohort="c1")
    assert change_key(key, value) == (100, "public.learners", '{"user_id":"u1"}')
    assert change_key(None, value) == (100, "public.learners", '{"cohort":"c1","user_id":"u1"}')
    with pytest.raises(ValueError):
        change_key(key, b'{"not": "a change"}')


def test_replayed_changes_are_dropped_and_new_ones_kept() -> None:
    snapshot = change("learners", {"user_id": "u1"}, 50, op="r", cohort="c0")
    first = change("learners", {"user_id": "u1"}, 100, cohort="c1")
    same_txn = change("learners", {"user_id": "u1"}, 120, cohort="c2")  # two changes of one row in one transaction
    other_row = change("learners", {"user_id": "u2"}, 110, cohort="c1")
    other_table = change("submissions", {"submission_id": "s1"}, 100, status="received")
    later = change("learners", {"user_id": "u1"}, 300, cohort="c3")
    stream = [snapshot, first, same_txn, other_row, other_table, first, same_txn, other_row, later, later]
    kept = list(dedup_changes(stream))
    assert kept == [snapshot, first, same_txn, other_row, other_table, later]


def test_truncates_tombstones_and_changes_without_lsn_are_kept() -> None:
    dedup = CdcDeduplicator()
    no_lsn = change("learners", {"user_id": "u1"}, None)
    truncate = change("learners", {}, 10, op="t")
    assert [dedup.accept(*no_lsn), dedup.accept(*no_lsn)] == [True, True]
    assert [dedup.accept(*truncate), dedup.accept(*truncate)] == [True, True]
    assert dedup.accept(b'{"user_id": "u1"}', None)
    assert dedup.dropped == 0


def test_change_event_model_reads_debezium_json() -> None:
    _, value = change("learners", {"user_id": "u1"}, 100, cohort="c1")
    event = ChangeEvent.model_validate_json(value)
    assert (event.op, event.source.table, event.source.schema_name, event.source.lsn) == (
        "u",
        "learners",
        "public",
        100,
    )


# --- learners -----------------------------------------------------------------------------------------------


def test_learner_profile_validates_zone_and_level() -> None:
    profile = LearnerProfile(user_id="u1", timezone="Europe/Paris", target_level="B2")
    assert profile.display_name is None
    with pytest.raises(ValidationError, match="time zone"):
        LearnerProfile(user_id="u1", timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        LearnerProfile(user_id="u1", target_level="D1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LearnerProfile(user_id="")


# --- AsyncAPI -----------------------------------------------------------------------------------------------


def test_asyncapi_document_lists_every_topic_with_its_contract() -> None:
    document = yaml.safe_load(asyncapi_yaml())
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {spec.name for spec in TOPICS} <= addresses
    assert {cdc_topic(table) for table in CAPTURED_TABLES} <= addresses
    assert addresses == set(documented_topics())
    schemas = document["components"]["schemas"]
    assert {"SubmissionReceived", "TranscriptCreated", "FeedbackGenerated", "DeadLetterRecord", "ChangeEvent"} <= set(
        schemas
    )
    messages = document["components"]["messages"]
    payload_of: dict[str, set[str]] = {}
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].split("/")[-1]]
            payload_of.setdefault(channel["address"], set()).add(message["payload"]["$ref"].split("/")[-1])
    assert payload_of["speech.transcripts.v1"] == {"TranscriptCreated"}
    assert payload_of["speech.feedback.v1.dlq"] == {"DeadLetterRecord"}
    assert payload_of["cdc.public.learners"] == {"ChangeEvent"}


def test_checked_in_asyncapi_document_is_fresh() -> None:
    assert DOC_PATH.exists(), "run `coach asyncapi` to write docs/asyncapi.yaml"
    assert DOC_PATH.read_text(encoding="utf-8") == asyncapi_yaml(), "stale docs/asyncapi.yaml: run `coach asyncapi`"
