"""``coach run``: every service of the local mode in one foreground process, stopped cleanly on Ctrl-C.

Each service runs in a thread of this process: the HTTP APIs (uvicorn servers), the transcription
worker, the projector, the feedback worker and the dataflows. One process matters in the local mode:
chDB opens its data directory in one process only, so the dataflows (writers) and the progress API
(reader) must share it. With containers every service runs as its own process instead
(docker-compose.yml).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.http_server import HttpLimits, serve_uvicorn
from runtime.service_states import READY, states

__all__ = ["Service", "ServiceSet", "failure_line", "local_services"]

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A named unit of work: ``run(stop)`` blocks until ``stop`` is set (returning earlier, or raising, is a failure).

    Readiness (``/readyz`` of ``coach run``, :mod:`runtime.service_states`): a service with ``port`` is ready once
    that port on ``host`` accepts connections; one with ``ready_on_start`` as soon as its thread runs; any other
    marks itself ready from its thread (consumer loops once they have joined their group, dataflows once their
    sinks are open)."""

    name: str
    run: Callable[[threading.Event], None]
    port: int | None = None
    host: str = "127.0.0.1"
    ready_on_start: bool = False
    thread: threading.Thread | None = None
    error: BaseException | None = None


def http_service(
    name: str, app_factory: Callable[[], object], host: str, port: int, limits: HttpLimits | None = None
) -> Service:
    """A uvicorn server as a :class:`Service`, built by :func:`runtime.http_server.serve_uvicorn` with ``limits``
    (default: the app's ``app.state.http_limits``, which the ingestion app sets from its settings; else
    :class:`~runtime.http_server.HttpLimits`' defaults); ``should_exit`` is set when ``stop`` is. Raises
    ``RuntimeError`` when the server ends before ``stop`` (e.g. the port is in use)."""

    def run(stop: threading.Event) -> None:
        serve_uvicorn(app_factory(), host, port, limits, stop=stop, signals=False)  # the main thread owns signals
        if not stop.is_set():
            raise RuntimeError(f"{name} stopped unexpectedly (port {port} in use?)")

    return Service(name, run, port=port, host=host)


def failure_line(service: Service) -> str:
    """One line naming the failed service and its cause, e.g. ``metrics-flow failed: RuntimeError: …``."""
    error = service.error
    cause = f"{type(error).__name__}: {error}" if error is not None else "unknown cause"
    return f"{service.name} failed: {' '.join(cause.split())}"[:2000]


@dataclass
class ServiceSet:
    """Starts services in threads (named after them), tracks their states, reports the first failure, stops them
    all together."""

    services: list[Service]
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Register and start every service thread (and a watcher of the ports of HTTP services)."""
        states.clear()
        for service in self.services:
            states.register(service.name)
        for service in self.services:
            service.thread = threading.Thread(target=self._guard, args=(service,), name=service.name, daemon=True)
            service.thread.start()
        if any(s.port for s in self.services):
            threading.Thread(target=self._watch_ports, name="service-port-watcher", daemon=True).start()

    def _guard(self, service: Service) -> None:
        if service.ready_on_start:
            states.mark_ready(service.name)
        try:
            service.run(self.stop)
            if not self.stop.is_set():
                raise RuntimeError("returned before it was told to stop")
            states.set(service.name, "stopped")
        except BaseException as exc:  # noqa: BLE001 - reported by failed()
            service.error = exc
            states.set(service.name, f"failed: {type(exc).__name__}: {exc}"[:500])
            if not self.stop.is_set():
                log.exception("service %s failed", service.name)

    def _watch_ports(self) -> None:
        waiting = [s for s in self.services if s.port]
        while waiting and not self.stop.is_set():
            for service in list(waiting):
                try:
                    with socket.create_connection((service.host, service.port or 0), timeout=0.5):
                        states.mark_ready(service.name)
                        waiting.remove(service)
                except OSError:
                    pass
            self.stop.wait(0.2)

    def failed(self) -> list[Service]:
        """Services that ended with an error (while the set was running)."""
        return [s for s in self.services if s.error is not None]

    def ready(self) -> bool:
        """Whether every service is ready."""
        return all(state == READY for state in states.snapshot().values())

    def wait(self) -> None:
        """Block until ``stop`` is set or a service fails."""
        while not self.stop.is_set() and not self.failed():
            time.sleep(0.2)

    def shutdown(self, timeout_s: float = 60.0) -> list[str]:
        """Set ``stop`` and join the threads; returns the names of threads still alive after ``timeout_s``."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            if service.thread is not None:
                service.thread.join(max(0.1, deadline - time.monotonic()))
        still = [s.name for s in self.services if s.thread is not None and s.thread.is_alive()]
        if not still:
            states.clear()  # this process runs none of them any more: /readyz is the APIs' own again
        return still


def flow_services() -> list[Service]:
    """The dataflows and the lag sampler: the metric flow, the observability flow, consumer-lag samples."""
    from flows.dataflow import run_metrics_flow
    from flows.observability import run_observability_flow, sample_consumer_lag

    def metrics(stop: threading.Event) -> None:
        run_metrics_flow(stop, on_ready=lambda: states.mark_ready("metrics-flow"))

    def observability(stop: threading.Event) -> None:
        run_observability_flow(stop, on_ready=lambda: states.mark_ready("observability-flow"))

    return [
        Service("metrics-flow", metrics),
        Service("observability-flow", observability),
        Service("lag-sampler", sample_consumer_lag, ready_on_start=True),
    ]


def local_services(*, with_transcription: bool = True) -> list[Service]:
    """Every service of the local mode, configured from the environment."""
    from ingestion.app import create_app
    from ingestion.settings import IngestionSettings

    ingestion = IngestionSettings()
    services = [http_service("ingestion-api", create_app, ingestion.host, ingestion.port)]
    if with_transcription:
        from transcription.cli import run_transcription_worker

        services.append(Service("transcription-worker", run_transcription_worker))
    from feedback.worker import run_feedback_worker
    from projections.projector import run_projector

    services.append(Service("projector", run_projector))
    # chDB: one process per data directory, so the flows (writers) and the progress API (reader) share this one.
    services.extend(flow_services())
    from api.app import serve_api
    from api.settings import ApiSettings

    api = ApiSettings()
    services.append(Service("progress-api", serve_api, port=api.port, host=api.host))

    services.append(Service("feedback-worker", run_feedback_worker))
    return services
