"""What each service of this process is doing: the registry behind ``/readyz`` of ``coach run``.

``coach run`` runs every service of the local mode as a thread of one process (:mod:`coach.services`). It
registers each by name (``starting``); a service says it is ready from its own thread (:func:`mark_ready`, which
finds the service by the thread's name) once it can do its work: a consumer loop once it has joined its group, a
dataflow once its sinks are open, an HTTP server once its port accepts connections. The supervisor records a
failure (``failed: <cause>``) or a clean end (``stopped``). Both HTTP APIs add these states to their ``/readyz``
(:func:`runtime.readiness.readiness_response`), so a ready answer covers every service the process runs. A process
that registered nothing (a service run alone, e.g. in a container) reports no states. Thread-safe.
"""

from __future__ import annotations

import threading

__all__ = ["READY", "STARTING", "ServiceStates", "mark_ready", "states"]

STARTING = "starting"
READY = "ready"


class ServiceStates:
    """``{service name: state}`` of this process; a state is ``starting``, ``ready``, ``stopped`` or
    ``failed: <cause>``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}

    def register(self, name: str) -> None:
        """Add ``name`` as ``starting`` (again, if it was registered before)."""
        with self._lock:
            self._states[name] = STARTING

    def set(self, name: str, state: str) -> None:
        """Record ``state`` for a registered service (an unknown name is ignored)."""
        with self._lock:
            if name in self._states:
                self._states[name] = state

    def mark_ready(self, name: str | None = None) -> None:
        """Mark ``name`` (default: the service whose thread calls this) ready, unless it already failed."""
        name = name or threading.current_thread().name
        with self._lock:
            if self._states.get(name) == STARTING:
                self._states[name] = READY

    def snapshot(self) -> dict[str, str]:
        """A copy of every service's state."""
        with self._lock:
            return dict(self._states)

    def clear(self) -> None:
        """Forget every service (tests, or a supervisor that starts again)."""
        with self._lock:
            self._states.clear()


states = ServiceStates()
"""The process's registry."""


def mark_ready(name: str | None = None) -> None:
    """:meth:`ServiceStates.mark_ready` on the process's registry."""
    states.mark_ready(name)
