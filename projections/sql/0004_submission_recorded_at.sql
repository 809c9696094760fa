-- When the learner recorded the answer (SubmissionReceived.payload.recorded_at, client clock, UTC): the event time
-- of metrics windows. NULL when the app did not say (then the upload time, received_at, stands for it).
ALTER TABLE submissions ADD COLUMN IF NOT EXISTS recorded_at timestamptz;
