-- Tables behind the Grafana dashboards "Pipeline health", "Transcription performance" and "Cohort overview"
-- (grafana/dashboards.py). Fed from the event topics, Kafka's consumer-group offsets and the learners' CDC stream
-- by the platform's dataflows; every table is idempotent under re-delivery (ReplacingMergeTree on the natural key).
-- pipeline_events (0001) holds one row per event of the three event topics (throughput, end-to-end latency).

-- One row per TranscriptCreated (speech.transcripts.v1): the worker's per-stage timings (payload.timings, ms).
CREATE TABLE IF NOT EXISTS {{db}}.transcription_runs
(
    event_id          UUID,
    submission_id     UUID,
    user_id           String,
    occurred_at       DateTime64(6, 'UTC') COMMENT 'TranscriptCreated.occurred_at',
    duration_s        Float64 COMMENT 'payload.duration_s: decoded audio, s',
    asr_model         LowCardinality(String),
    compute_type      LowCardinality(String) COMMENT 'int8 | float16 …',
    device            LowCardinality(String) COMMENT 'cpu | cuda',
    language          LowCardinality(String),
    word_count        UInt32,
    batch_size        UInt16 COMMENT 'messages in the batch it was transcribed with',
    queue_wait_ms     Float64 COMMENT 'SubmissionReceived.occurred_at to batch start',
    fetch_ms          Float64,
    decode_ms         Float64,
    vad_ms            Float64,
    inference_ms      Float64 COMMENT 'the message''s share of the batch inference',
    source_partition  UInt32,
    source_offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (occurred_at, event_id);

-- One row per DeadLetterRecord on any <topic>.dlq.
CREATE TABLE IF NOT EXISTS {{db}}.dead_letters
(
    dead_letter_id      UUID,
    failed_at           DateTime64(3, 'UTC'),
    topic               LowCardinality(String) COMMENT 'the dead-letter topic, <original_topic>.dlq',
    original_topic      LowCardinality(String),
    original_partition  UInt32,
    original_offset     UInt64,
    consumer_group      LowCardinality(String),
    error_class         LowCardinality(String),
    reason              String,
    user_id             Nullable(String),
    submission_id       Nullable(UUID),
    event_id            Nullable(UUID)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (failed_at, dead_letter_id);

-- Consumer lag sampled periodically (end offset minus committed offset, per group and partition).
CREATE TABLE IF NOT EXISTS {{db}}.consumer_lag
(
    sampled_at        DateTime64(3, 'UTC'),
    consumer_group    LowCardinality(String),
    topic             LowCardinality(String),
    partition         UInt32,
    end_offset        UInt64,
    committed_offset  Int64 COMMENT '-1 when the group has committed nothing on the partition',
    lag               UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(sampled_at)
ORDER BY (consumer_group, topic, partition, sampled_at)
TTL toDateTime(sampled_at) + INTERVAL 90 DAY;

-- The learner profiles mirrored from cdc.public.learners (newest change per learner wins; deleted = 1 on a
-- delete event), so dashboards can group by cohort and coach without a PostgreSQL datasource.
CREATE TABLE IF NOT EXISTS {{db}}.learner_profiles
(
    user_id       String,
    display_name  Nullable(String),
    timezone      LowCardinality(String),
    cohort        Nullable(String),
    coach_id      Nullable(String),
    updated_at    DateTime64(6, 'UTC') COMMENT 'learners.updated_at (or the change event time)',
    deleted       UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY user_id;
