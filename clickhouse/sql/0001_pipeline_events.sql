-- Pipeline bookkeeping table; metric tables arrive with the dataflows (flows/).
CREATE TABLE IF NOT EXISTS {{db}}.pipeline_events
(
    event_id       UUID,
    event_type     LowCardinality(String),
    user_id        String,
    submission_id  UUID,
    occurred_at    DateTime64(3, 'UTC'),
    topic          LowCardinality(String),
    partition      UInt16,
    offset         UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (event_type, event_id);
