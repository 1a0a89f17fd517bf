"""The ``tiergate`` command: serve, prepare-models, fake-upstream, and the router's train/evaluate/calibrate/score."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gateway.settings import ConfigError, Settings, load_settings


def set_openmp_wait_policy(settings: Settings) -> None:
    """Before torch loads: OpenMP threads sleep between parallel regions when models run in-process.

    Spinning threads of one in-process model starve the other model and the event loop on a small CPU box
    (about 5x slower streaming measured here). With only the router on torch, the default (spin briefly,
    then sleep) makes a routing decision about twice as fast as PASSIVE (bench/classifier_latency.py).
    """
    if any(backend.kind == "transformers" for backend in settings.tiers.values()):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    set_openmp_wait_policy(settings)
    import uvicorn

    from gateway.app import create_app
    from gateway.http.connection_limits import server_options

    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if updates:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=updates)})
    workers = args.workers or settings.server.workers
    if workers > 1:
        from gateway.workers.supervisor import serve_workers

        return serve_workers(settings, args.config, workers, args.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s),
        **server_options(settings.server),  # httptools with connection limits
    )
    return 0


def prepare_models(args: argparse.Namespace) -> int:
    from gateway.backends.local.models import prepare_builtin_models

    for name, path in prepare_builtin_models(args.names or None).items():
        print(f"{name}: {path}")
    return 0


def fake_upstream(args: argparse.Namespace) -> int:
    from gateway.tools.fake_upstream import serve_fake_upstream

    serve_fake_upstream(args.host, args.port, args.failure_rate, args.latency)
    return 0


def hash_key(args: argparse.Namespace) -> int:
    from gateway.admission.auth import hash_key as digest
    from gateway.admission.auth import new_key

    key = args.key
    if key is None and not args.new:
        key = sys.stdin.readline().strip()  # read, not an argument: keeps the key out of shell history
    if not key:
        key = new_key()
        print(f"key:  {key}")
    print(f"hash: {digest(key)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--config", help="YAML settings file (default: config/default.yaml or $TIERGATE_CONFIG)")
    run.add_argument("--host", help="listen address (overrides server.host)")
    run.add_argument("--port", type=int, help="listen port (overrides server.port)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--workers", type=int, help="processes sharing the port (overrides server.workers)")
    run.set_defaults(func=serve)

    prepare = commands.add_parser("prepare-models", help="convert the embedded GGUF models into the model cache")
    prepare.add_argument("names", nargs="*", help="builtin model names (default: all)")
    prepare.set_defaults(func=prepare_models)

    fake = commands.add_parser("fake-upstream", help="run a fake OpenAI-compatible upstream (demos, benchmarks)")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--failure-rate", type=float, default=0.0, help="share of requests answered with HTTP 500")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds before each answer (model time)")
    fake.set_defaults(func=fake_upstream)

    hashing = commands.add_parser("hash-key", help="print the hash of a gateway API key for auth.keys")
    hashing.add_argument("key", nargs="?", help="the key (default: read from stdin)")
    hashing.add_argument("--new", action="store_true", help="generate a new random key and print it with its hash")
    hashing.set_defaults(func=hash_key)

    from gateway.learning.cli import add_commands as add_labels
    from gateway.tools.report import add_commands as add_report
    from routers.cli import add_commands

    add_commands(commands)
    add_labels(commands)
    add_report(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.telemetry import log_context

    logging.basicConfig(level=logging.INFO, format=log_context.LOG_FORMAT)
    log_context.install()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
