"""``coach run``: every service of the local mode in one foreground process, stopped cleanly on Ctrl-C.

Each service runs in a thread of this process: the HTTP APIs (uvicorn servers), the transcription
worker, the projector, the feedback worker and the dataflows. One process matters in the local mode:
chDB opens its data directory in one process only, so the dataflows (writers) and the progress API
(reader) must share it. With containers every service runs as its own process instead
(docker-compose.yml).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn

__all__ = ["Service", "ServiceSet", "local_services"]

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A named unit of work: ``run(stop)`` blocks until ``stop`` is set (or it fails)."""

    name: str
    run: Callable[[threading.Event], None]
    thread: threading.Thread | None = None
    error: BaseException | None = None


def http_service(name: str, app_factory: Callable[[], object], host: str, port: int) -> Service:
    """A uvicorn server as a :class:`Service` (``should_exit`` is set when ``stop`` is)."""

    def run(stop: threading.Event) -> None:
        server = uvicorn.Server(uvicorn.Config(app_factory(), host=host, port=port, log_level="warning"))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the main thread owns signals
        watcher = threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True)
        watcher.start()
        server.run()
        if not stop.is_set():
            raise RuntimeError(f"{name} stopped unexpectedly (port {port} in use?)")

    return Service(name, run)


@dataclass
class ServiceSet:
    """Starts services in threads, reports the first failure, stops them all together."""

    services: list[Service]
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start every service thread."""
        for service in self.services:
            service.thread = threading.Thread(target=self._guard, args=(service,), name=service.name, daemon=True)
            service.thread.start()

    def _guard(self, service: Service) -> None:
        try:
            service.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by failed()
            service.error = exc
            log.exception("service %s failed", service.name)

    def failed(self) -> list[Service]:
        """Services that ended with an error."""
        return [s for s in self.services if s.error is not None]

    def wait(self) -> None:
        """Block until ``stop`` is set or a service fails."""
        while not self.stop.is_set() and not self.failed():
            time.sleep(0.5)

    def shutdown(self, timeout_s: float = 60.0) -> list[str]:
        """Set ``stop`` and join the threads; returns the names of threads still alive after ``timeout_s``."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            if service.thread is not None:
                service.thread.join(max(0.1, deadline - time.monotonic()))
        return [s.name for s in self.services if s.thread is not None and s.thread.is_alive()]


def flow_services() -> list[Service]:
    """The dataflows and the lag sampler: the metric flow, the observability flow, consumer-lag samples."""
    from flows.dataflow import run_metrics_flow
    from flows.observability import run_observability_flow, sample_consumer_lag

    return [
        Service("metrics-flow", run_metrics_flow),
        Service("observability-flow", run_observability_flow),
        Service("lag-sampler", sample_consumer_lag),
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

    services.append(Service("progress-api", serve_api))

    services.append(Service("feedback-worker", run_feedback_worker))
    return services
