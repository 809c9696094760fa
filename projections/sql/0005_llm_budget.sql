-- The feedback worker's per-learner daily budget of LLM feedback (feedback/store.py: take_llm_budget).
-- Operational state of the feedback worker, not a read model: keep it out of the Debezium publication.
--
-- One row per (learner, UTC day, submission) that was allowed to ask an LLM provider; a redelivered transcript
-- finds its row and does not spend the budget twice. Rows older than a few days can be deleted at any time.
CREATE TABLE IF NOT EXISTS llm_budget (
    user_id        text NOT NULL,
    day            date NOT NULL,
    submission_id  uuid NOT NULL,
    reserved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day, submission_id)
);
