"""``tiergate serve --workers N``: models prepared once, then uvicorn's supervisor runs N workers on one socket."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gateway.settings import LocalBackend, Settings, load_settings

log = logging.getLogger("tiergate.workers")

# Where the workers of one supervisor exchange metrics snapshots (set by the supervisor for its workers).
METRICS_DIR_ENV = "TIERGATE_WORKER_METRICS_DIR"


def prepare_models_once(settings: Settings) -> None:
    """Check requirements and convert GGUF/builtin models before any worker starts, so N workers do not
    convert the same model at once; each worker then loads the converted directory."""
    from gateway.backends.requirements import check_backend_requirements

    check_backend_requirements(settings)
    locals_ = [b for b in settings.tiers.values() if isinstance(b, LocalBackend)]
    if not locals_:
        return
    from gateway.backends.local.models import resolve_model_dir

    for backend in locals_:
        resolve_model_dir(backend.path, backend.gguf_file, backend.cache_dir)


def worker_app() -> Any:
    """The ASGI app of one worker (uvicorn imports this in every worker process)."""
    from gateway.app import create_app
    from gateway.cli import set_openmp_wait_policy
    from gateway.http.connection_limits import bind_worker_limits
    from gateway.workers.metrics_dir import WorkerMetrics, WorkerMetricsMiddleware

    settings = load_settings()
    set_openmp_wait_policy(settings)
    bind_worker_limits(settings.server)  # before the first connection: the protocol reads them per connection
    app = create_app(settings)
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        return app
    registry = app.state.metrics_registry
    return WorkerMetricsMiddleware(app, WorkerMetrics(registry, directory))


def serve_workers(settings: Settings, config: str | None, workers: int, log_level: str) -> int:
    """Run ``workers`` processes on ``server.host:server.port``; SIGTERM drains every worker."""
    import uvicorn

    from gateway.http.connection_limits import worker_server_options

    prepare_models_once(settings)
    given = os.environ.get(METRICS_DIR_ENV)  # an operator's (or a test's) own directory is kept
    directory = given or tempfile.mkdtemp(prefix="tiergate-metrics-")
    # Workers are fresh interpreters: they read the same file and these overrides from the environment.
    if config is not None:
        os.environ["TIERGATE_CONFIG"] = str(Path(config).resolve())
    os.environ["TIERGATE_SERVER__HOST"] = settings.server.host
    os.environ["TIERGATE_SERVER__PORT"] = str(settings.server.port)
    os.environ[METRICS_DIR_ENV] = directory
    log.info("starting %d workers on %s:%d", workers, settings.server.host, settings.server.port)
    try:
        uvicorn.run(
            "gateway.workers.supervisor:worker_app",
            factory=True,
            workers=workers,
            host=settings.server.host,
            port=settings.server.port,
            loop="uvloop",
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_s),
            **worker_server_options(settings.server),  # httptools with connection limits, in every worker
        )
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
