"""Coaching feedback on transcripts: a rules-based default and OpenAI-compatible LLM providers with failover.

Modules: ``settings`` (``FeedbackSettings``, ``COACH_FEEDBACK_*``), ``providers`` (request/result types and
errors), ``rules`` (the deterministic provider), ``llm`` (OpenAI-compatible chat completions), ``breaker``
(circuit breaker), ``chain`` (failover with retries, breakers and a concurrency cap), ``store`` (PostgreSQL
dedup ledger), ``worker`` (the ``feedback`` consumer group; ``run_feedback_worker``), ``cli`` (``coach feedback``)
and ``telemetry`` (Prometheus instruments).

Metrics come from :func:`flows.metrics.compute_metrics`, the one implementation shared with the dataflows.
"""
