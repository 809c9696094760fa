-- The feedback worker's deduplication ledger: at most one FeedbackGenerated per submission.
-- Operational state of the feedback worker (feedback/store.py), not a read model: keep it out of the
-- Debezium publication.
--
-- A row is reserved (published_at NULL) with the exact event that will be produced, before it is produced;
-- published_at is set once the broker acknowledged it. A re-delivered transcript finds the row: published ->
-- skipped; still reserved (the worker died between the two steps) -> the stored event is produced again,
-- byte for byte, so a duplicate on the topic carries the same event_id and downstream dedup drops it.
CREATE TABLE IF NOT EXISTS feedback_dedup (
    submission_id        uuid PRIMARY KEY,
    event_id             uuid NOT NULL UNIQUE,
    transcript_event_id  uuid NOT NULL,
    user_id              text NOT NULL,
    provider             text NOT NULL,
    event_json           text NOT NULL,
    reserved_at          timestamptz NOT NULL DEFAULT now(),
    published_at         timestamptz
);
