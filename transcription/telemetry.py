"""Prometheus instruments of the transcription consumer group (one ``/metrics`` port per worker process).

Named *telemetry* rather than *metrics* so that it is not confused with the speaking metrics of
:mod:`flows.metrics`.
"""

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["AUDIO_SECONDS", "BATCH_SIZE", "CONSUMER_LAG", "DEAD_LETTERS", "RTFX", "STAGE_SECONDS", "TRANSCRIPTS"]

BATCH_SIZE = Histogram(
    "coach_transcription_batch_size", "Messages per transcription batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
AUDIO_SECONDS = Counter("coach_transcription_audio_seconds_total", "Seconds of audio transcribed")
RTFX = Histogram(
    "coach_transcription_rtfx",
    "Inverse real-time factor per batch: audio seconds / wall seconds of the batch",
    buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256),
)
STAGE_SECONDS = Histogram(
    "coach_transcription_stage_seconds",
    "Per-message latency of a worker stage, seconds",
    ["stage"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CONSUMER_LAG = Gauge(
    "coach_transcription_consumer_lag", "High watermark minus committed position", ["topic", "partition"]
)
TRANSCRIPTS = Counter("coach_transcription_transcripts_total", "TranscriptCreated events acknowledged")
DEAD_LETTERS = Counter("coach_transcription_dead_letters_total", "Messages sent to the DLQ", ["error_class"])
