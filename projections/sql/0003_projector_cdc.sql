-- The projector's merge rules and Debezium's change data capture over the read models.
--
-- A separate file (not an edit of 0001) so that databases that already applied 0001 keep migrating.

-- Status of a submission from the facts merged into its row (every fact is only ever added, so the status never
-- moves backwards whatever order the events arrive in):
--   failed       when the newest failure is not older than the newest success (a redrive that succeeded later wins),
--   feedback     when feedback exists, transcribed when a transcript exists, received otherwise.
-- IMMUTABLE: a pure function of its arguments, used inside the projector's INSERT … ON CONFLICT statements.
CREATE OR REPLACE FUNCTION submission_status(
    received_at timestamptz, transcribed_at timestamptz, feedback_at timestamptz, failed_at timestamptz
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN failed_at IS NOT NULL
             AND failed_at >= COALESCE(GREATEST(received_at, transcribed_at, feedback_at), '-infinity') THEN 'failed'
        WHEN feedback_at IS NOT NULL THEN 'feedback'
        WHEN transcribed_at IS NOT NULL THEN 'transcribed'
        ELSE 'received'
    END
$$;

-- submissions.updated_at is the event time of the newest fact merged into the row (not the wall clock of the
-- projector), so replaying the same events rebuilds an identical table.
ALTER TABLE submissions ALTER COLUMN updated_at DROP DEFAULT;

-- More of FeedbackGenerated for the progress API.
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS latency_ms double precision;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS metrics_version integer;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS asr_model text;

-- Debezium: full before-images of learner profile changes (the app owns those rows and analytics wants to see what
-- changed, e.g. a cohort or coach move). The other captured tables keep the default replica identity (primary key):
-- their updates only ever add facts, and the before-image of an update then carries only the key.
ALTER TABLE learners REPLICA IDENTITY FULL;

-- The publication Debezium's pgoutput plugin streams (connector property publication.name). Only the read models
-- and the heartbeat table; not api_keys (secrets), idempotency_keys, projection_offsets or processed_events (the
-- projector's bookkeeping). Debezium would create the same one (publication.autocreate.mode=filtered); creating it
-- here keeps the captured set under version control.
CREATE PUBLICATION coach_cdc FOR TABLE
    learners, submissions, submission_timeline, transcripts, feedback, debezium_heartbeat;
