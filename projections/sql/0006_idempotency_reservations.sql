-- Idempotency-Key reservations of the ingestion API (ingestion/idempotency.py): reserve -> produce -> confirm.
-- The reservation stores the whole SubmissionReceived event (event_id and submission_id fixed when the key is
-- reserved), so a retry after a 503, a late broker acknowledgement or a crash between reserve and produce
-- re-produces the SAME event (consumers deduplicate by event_id / submission_id) instead of answering with an id
-- that was never produced or creating a second submission. confirmed_at is set once the broker acknowledged it.
-- Rows of before this migration (event NULL) were written after their event was acknowledged: confirmed.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS event jsonb;
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;
UPDATE idempotency_keys SET confirmed_at = created_at WHERE event IS NULL AND confirmed_at IS NULL;
