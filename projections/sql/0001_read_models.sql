-- Read models (projections) built from the events, plus tables the app and the API own.
-- Captured by Debezium (publication coach_cdc) into cdc.public.<table>.

CREATE TABLE IF NOT EXISTS learners (
    user_id          text PRIMARY KEY,
    display_name     text,
    timezone         text NOT NULL DEFAULT 'UTC',
    native_language  text,
    target_level     text,
    cohort           text,
    coach_id         text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id        uuid PRIMARY KEY,
    user_id       text NOT NULL,
    role          text NOT NULL CHECK (role IN ('learner', 'coach', 'admin')),
    token_sha256  text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE TABLE IF NOT EXISTS submissions (
    submission_id   uuid PRIMARY KEY,
    user_id         text NOT NULL,
    prompt_id       text,
    status          text NOT NULL CHECK (status IN ('received', 'transcribed', 'feedback', 'failed')),
    received_at     timestamptz,
    transcribed_at  timestamptz,
    feedback_at     timestamptz,
    failed_at       timestamptz,
    failure_reason  text,
    blob_uri        text,
    duration_s      double precision,
    asr_model       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS submissions_user_received ON submissions (user_id, received_at DESC);

CREATE TABLE IF NOT EXISTS submission_timeline (
    event_id       uuid PRIMARY KEY,
    submission_id  uuid NOT NULL,
    user_id        text NOT NULL,
    status         text NOT NULL,
    at             timestamptz NOT NULL,
    detail         text
);
CREATE INDEX IF NOT EXISTS submission_timeline_submission ON submission_timeline (submission_id, at);

CREATE TABLE IF NOT EXISTS transcripts (
    submission_id  uuid PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    user_id        text NOT NULL,
    text           text NOT NULL,
    language       text,
    duration_s     double precision,
    word_count     integer,
    asr_model      text,
    occurred_at    timestamptz NOT NULL,
    words          jsonb NOT NULL DEFAULT '[]'::jsonb
);

CREATE TABLE IF NOT EXISTS feedback (
    submission_id  uuid PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    user_id        text NOT NULL,
    provider       text NOT NULL,
    model          text,
    text           text NOT NULL,
    points         jsonb NOT NULL DEFAULT '[]'::jsonb,
    occurred_at    timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id          text NOT NULL,
    idempotency_key  text NOT NULL,
    submission_id    uuid NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);

-- Effectively-once projection: the consumed positions are written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS projection_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE IF NOT EXISTS processed_events (
    event_id      uuid PRIMARY KEY,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Debezium heartbeat.action.query target, part of the publication so the slot advances when idle.
CREATE TABLE IF NOT EXISTS debezium_heartbeat (
    id  integer PRIMARY KEY,
    ts  timestamptz NOT NULL
);
