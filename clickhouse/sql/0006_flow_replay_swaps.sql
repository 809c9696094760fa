-- Swap journal of the replay (flows/replay.py): what each swap, rollback or drop-old of the metric tables set out
-- to do, and how far it got. An operation first inserts its plan (one row per table: the UUID of the table at the
-- live name when it starts and the UUID that must be there when it ends), then one row after each statement, then
-- an end row ('done'). The next `coach replay …` reads it to finish or undo an operation interrupted between any two
-- statements (flows.replay.recover). Append-only; a handful of rows per operation.
CREATE TABLE IF NOT EXISTS {{db}}.flow_replay_swaps
(
    flow         LowCardinality(String),
    version      UInt32 COMMENT 'the replay version N (<table>_vN, <table>_before_vN)',
    op_id        UInt64 COMMENT 'the operation: unique and increasing (ns since the epoch when it was planned)',
    op           LowCardinality(String) COMMENT 'swap | rollback | revert | drop_old',
    ref_op       UInt64 COMMENT 'revert: op_id of the interrupted swap it undoes; otherwise 0',
    live_table   String COMMENT 'the live table name (submission_metrics …); empty on the end row',
    state        LowCardinality(String) COMMENT 'planned | renamed | exchanged | dropped | done',
    source_uuid  UUID COMMENT 'planned: the table at live_table when the operation started (drop_old: to drop)',
    target_uuid  UUID COMMENT 'planned: the table to be at live_table when it ends (drop_old: the live one, kept)',
    at           DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (flow, op_id, at);
