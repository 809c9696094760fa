"""The local stack of real engines, without Docker: a single-node Apache Kafka broker (KRaft), a Kafka Connect worker
with the Debezium PostgreSQL connector (both run from Maven Central jars on the machine's JDK) and a private PostgreSQL
cluster from the machine's PostgreSQL binaries.

Entry points: :class:`stack.supervisor.Supervisor` and the ``coach stack up|down|status`` commands
(:data:`stack.cli.app`, also ``python -m stack``). Settings: :class:`stack.settings.StackSettings` (``COACH_*``).
One-time set-up of jars and binaries: ``stack/bootstrap.sh``.
"""
