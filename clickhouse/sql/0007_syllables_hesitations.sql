-- Metrics version 2 (issue 18, flows.metrics.METRICS_VERSION): syllable-based pace and runs, filled pauses per
-- minute, and what the hesitation detector heard. Columns are added, none renamed; every new column is Nullable or
-- has a default, so rows written before this migration (metrics_version 1) read as "not measured" and a replay
-- (coach replay, which recomputes with version 2) fills them. Replay targets (CREATE TABLE ... AS the live table)
-- inherit the columns.

ALTER TABLE {{db}}.submission_metrics
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute Nullable(Float64)
        COMMENT 'merged filled pauses per minute of speech span' AFTER vocabulary_sufficient,
    ADD COLUMN IF NOT EXISTS voiced_hesitation_count UInt32 DEFAULT 0
        COMMENT 'filled pauses heard only by the hesitation detector' AFTER filled_pauses_per_minute,
    ADD COLUMN IF NOT EXISTS hesitation_detection Bool DEFAULT false
        COMMENT 'a hesitation detector ran: without it the filled-pause figures are unknown, not zero'
        AFTER voiced_hesitation_count,
    ADD COLUMN IF NOT EXISTS hallucinated_word_count UInt32 DEFAULT 0
        COMMENT 'recognised words inside held-sound spans' AFTER hesitation_detection,
    ADD COLUMN IF NOT EXISTS syllable_count UInt32 DEFAULT 0 AFTER hallucinated_word_count,
    ADD COLUMN IF NOT EXISTS speech_rate_sps Nullable(Float64)
        COMMENT 'syllables per second of speech span' AFTER syllable_count,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps Nullable(Float64)
        COMMENT 'syllables per second of phonation time' AFTER speech_rate_sps,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables Nullable(Float64)
        COMMENT 'syllables per run between silent pauses' AFTER articulation_rate_sps;

ALTER TABLE {{db}}.learner_metrics_windows
    ADD COLUMN IF NOT EXISTS speech_rate_sps_avg Nullable(Float64) AFTER repetition_count_max,
    ADD COLUMN IF NOT EXISTS speech_rate_sps_min Nullable(Float64) AFTER speech_rate_sps_avg,
    ADD COLUMN IF NOT EXISTS speech_rate_sps_p50 Nullable(Float64) AFTER speech_rate_sps_min,
    ADD COLUMN IF NOT EXISTS speech_rate_sps_p90 Nullable(Float64) AFTER speech_rate_sps_p50,
    ADD COLUMN IF NOT EXISTS speech_rate_sps_max Nullable(Float64) AFTER speech_rate_sps_p90,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps_avg Nullable(Float64) AFTER speech_rate_sps_max,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps_min Nullable(Float64) AFTER articulation_rate_sps_avg,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps_p50 Nullable(Float64) AFTER articulation_rate_sps_min,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps_p90 Nullable(Float64) AFTER articulation_rate_sps_p50,
    ADD COLUMN IF NOT EXISTS articulation_rate_sps_max Nullable(Float64) AFTER articulation_rate_sps_p90,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables_avg Nullable(Float64) AFTER articulation_rate_sps_max,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables_min Nullable(Float64) AFTER mean_length_of_run_syllables_avg,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables_p50 Nullable(Float64) AFTER mean_length_of_run_syllables_min,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables_p90 Nullable(Float64) AFTER mean_length_of_run_syllables_p50,
    ADD COLUMN IF NOT EXISTS mean_length_of_run_syllables_max Nullable(Float64) AFTER mean_length_of_run_syllables_p90,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute_avg Nullable(Float64) AFTER mean_length_of_run_syllables_max,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute_min Nullable(Float64) AFTER filled_pauses_per_minute_avg,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute_p50 Nullable(Float64) AFTER filled_pauses_per_minute_min,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute_p90 Nullable(Float64) AFTER filled_pauses_per_minute_p50,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute_max Nullable(Float64) AFTER filled_pauses_per_minute_p90,
    ADD COLUMN IF NOT EXISTS syllable_count UInt64 DEFAULT 0 AFTER vocabulary_sufficient,
    ADD COLUMN IF NOT EXISTS hesitation_detected_submissions UInt32 DEFAULT 0
        COMMENT 'submissions with hesitation detection: the filled-pause figures are over these only'
        AFTER syllable_count,
    ADD COLUMN IF NOT EXISTS filled_pauses_per_minute Nullable(Float64)
        COMMENT 'pooled over submissions with hesitation detection: filled pauses / speech span, per minute'
        AFTER hesitation_detected_submissions;
