-- Metric tables written by the Bytewax dataflows (flows/dataflow.py).
--
-- Every table is a ReplacingMergeTree whose ORDER BY is the row's natural key plus metrics_version, so a row
-- written twice (a restart that replays the last epoch, a replay, a retried insert) collapses to one; read with
-- FINAL (or argMax by the version column) to see the deduplicated state before background merges.
-- non_replicated_deduplication_window makes the inserts' insert_deduplication_token effective on plain
-- MergeTree (ReplicatedMergeTree deduplicates inserts by default).

-- One row per submission (TranscriptCreated): every metric of flows.metrics.compute_metrics.
CREATE TABLE IF NOT EXISTS {{db}}.submission_metrics
(
    user_id                     String,
    submission_id               UUID,
    event_id                    UUID,
    occurred_at                 DateTime64(6, 'UTC') COMMENT 'TranscriptCreated.occurred_at (event time)',
    language                    LowCardinality(String),
    recording_duration_s        Nullable(Float64) COMMENT 'duration of the decoded audio, s',
    pause_threshold_s           Float64,
    word_count                  UInt32,
    total_duration_s            Float64 COMMENT 'speech span: first word start to last word end, s',
    phonation_time_s            Float64 COMMENT 'speaking time (span minus silent pauses), s',
    speech_rate_wpm             Nullable(Float64),
    articulation_rate_wpm       Nullable(Float64),
    silent_pause_count          UInt32,
    silent_pauses_per_minute    Nullable(Float64),
    mean_silent_pause_s         Nullable(Float64),
    silent_pause_total_s        Float64,
    silent_pauses_s             Array(Float64),
    mean_length_of_run          Nullable(Float64) COMMENT 'words per run between silent pauses',
    filled_pause_count          UInt32,
    filled_pauses               Map(String, UInt32),
    filled_pauses_per_100_words Nullable(Float64),
    discourse_marker_count      UInt32,
    discourse_markers           Map(String, UInt32),
    repetition_count            UInt32,
    repetitions                 Array(String),
    vocabulary_token_count      UInt32,
    distinct_words              UInt32,
    mattr                       Nullable(Float64),
    mtld                        Nullable(Float64),
    vocabulary_sufficient       Bool,
    asr_model                   LowCardinality(String),
    metrics_version             UInt16,
    source_topic                LowCardinality(String),
    source_partition            UInt32,
    source_offset               UInt64,
    computed_at                 DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(occurred_at)
ORDER BY (user_id, submission_id, metrics_version)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per learner, window kind and window: tumbling daily and weekly (ISO weeks, Monday) and sliding 7-day
-- (1-day step) windows in the learner's timezone; distributions over the window's submissions and vocabulary
-- over its concatenated tokens. window_start/window_end are the UTC instants of the local boundaries.
CREATE TABLE IF NOT EXISTS {{db}}.learner_metrics_windows
(
    user_id                              String,
    window_kind                          LowCardinality(String) COMMENT 'daily | weekly | sliding_7d',
    window_start                         DateTime64(3, 'UTC'),
    window_end                           DateTime64(3, 'UTC'),
    timezone                             LowCardinality(String) COMMENT 'IANA zone the window is local to',
    local_start_date                     Date COMMENT 'first local day of the window',
    submissions                          UInt32,
    first_occurred_at                    DateTime64(6, 'UTC'),
    last_occurred_at                     DateTime64(6, 'UTC'),
    word_count                           UInt64,
    total_duration_s                     Float64,
    phonation_time_s                     Float64,
    speech_rate_wpm_avg                  Nullable(Float64),
    speech_rate_wpm_min                  Nullable(Float64),
    speech_rate_wpm_p50                  Nullable(Float64),
    speech_rate_wpm_p90                  Nullable(Float64),
    speech_rate_wpm_max                  Nullable(Float64),
    articulation_rate_wpm_avg            Nullable(Float64),
    articulation_rate_wpm_min            Nullable(Float64),
    articulation_rate_wpm_p50            Nullable(Float64),
    articulation_rate_wpm_p90            Nullable(Float64),
    articulation_rate_wpm_max            Nullable(Float64),
    silent_pauses_per_minute_avg         Nullable(Float64),
    silent_pauses_per_minute_min         Nullable(Float64),
    silent_pauses_per_minute_p50         Nullable(Float64),
    silent_pauses_per_minute_p90         Nullable(Float64),
    silent_pauses_per_minute_max         Nullable(Float64),
    mean_silent_pause_s_avg              Nullable(Float64),
    mean_silent_pause_s_min              Nullable(Float64),
    mean_silent_pause_s_p50              Nullable(Float64),
    mean_silent_pause_s_p90              Nullable(Float64),
    mean_silent_pause_s_max              Nullable(Float64),
    mean_length_of_run_avg               Nullable(Float64),
    mean_length_of_run_min               Nullable(Float64),
    mean_length_of_run_p50               Nullable(Float64),
    mean_length_of_run_p90               Nullable(Float64),
    mean_length_of_run_max               Nullable(Float64),
    filled_pauses_per_100_words_avg      Nullable(Float64),
    filled_pauses_per_100_words_min      Nullable(Float64),
    filled_pauses_per_100_words_p50      Nullable(Float64),
    filled_pauses_per_100_words_p90      Nullable(Float64),
    filled_pauses_per_100_words_max      Nullable(Float64),
    repetition_count_avg                 Nullable(Float64),
    repetition_count_min                 Nullable(Float64),
    repetition_count_p50                 Nullable(Float64),
    repetition_count_p90                 Nullable(Float64),
    repetition_count_max                 Nullable(Float64),
    filled_pause_count                   UInt32,
    filled_pauses_per_100_words          Nullable(Float64) COMMENT 'pooled: 100 * filled pauses / words',
    repetition_count                     UInt32,
    repetitions_per_100_words            Nullable(Float64) COMMENT 'pooled: 100 * repetitions / words',
    vocabulary_token_count               UInt32,
    distinct_words                       UInt32,
    mattr                                Nullable(Float64),
    mtld                                 Nullable(Float64),
    vocabulary_sufficient                Bool,
    asr_models                           Array(String),
    metrics_version                      UInt16,
    computed_at                          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (user_id, window_kind, window_start, timezone, metrics_version)
SETTINGS non_replicated_deduplication_window = 1000;

-- Submissions that arrived after the watermark had passed them (the windowing operator's late stream): one row
-- per submission and window it missed. They are in submission_metrics, not in these windows.
CREATE TABLE IF NOT EXISTS {{db}}.late_events
(
    user_id           String,
    submission_id     UUID,
    event_id          UUID,
    occurred_at       DateTime64(6, 'UTC'),
    timezone          LowCardinality(String),
    window_kind       LowCardinality(String),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    asr_model         LowCardinality(String),
    metrics_version   UInt16,
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    recorded_at       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (user_id, window_kind, window_start, timezone, submission_id, metrics_version)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per replay/backfill (coach replay): what was built, checked and swapped in.
CREATE TABLE IF NOT EXISTS {{db}}.flow_replays
(
    flow              LowCardinality(String),
    version           UInt32,
    metrics_version   UInt16,
    status            LowCardinality(String) COMMENT 'built | verified | swapped | failed',
    started_at        DateTime64(3, 'UTC'),
    finished_at       DateTime64(3, 'UTC'),
    end_offsets       String COMMENT 'JSON {topic: {partition: end offset}} captured at start',
    messages          UInt64,
    rows              Map(String, UInt64),
    detail            String
)
ENGINE = ReplacingMergeTree(finished_at)
ORDER BY (flow, version);
