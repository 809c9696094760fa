"""Errors raised by the local stack supervisor. Their messages are meant to be shown to the user as they are."""

from __future__ import annotations


class StackError(RuntimeError):
    """An engine could not be prepared, started, checked or stopped; the message says what to do."""


class PortInUseError(StackError):
    """A TCP port an engine needs is held by another process.

    Attributes:
        port: the TCP port.
        engine: human name of the engine that needs it, e.g. ``"Kafka broker"``.
        env_var: the environment variable that changes it, e.g. ``"COACH_KAFKA_PORT"``.
    """

    def __init__(self, port: int, engine: str, env_var: str) -> None:
        self.port = port
        self.engine = engine
        self.env_var = env_var
        super().__init__(f"port {port} is already in use ({engine}); set {env_var} to another port")
