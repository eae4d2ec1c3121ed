"""The `st-provider serve` sub-command: the SOAP service under gunicorn (:mod:`provider.server`).

``serve [--bind HOST:PORT] [--workers N] [--threads N] [--no-worker] [--gunicorn-config FILE]``
refuses to start without the Web Service Password. This module imports nothing heavy:
:mod:`provider.server` is imported when the command runs, after its set-up.
"""

from __future__ import annotations

import argparse
from typing import Any

from provider.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` to the CLI."""
    serve = subparsers.add_parser("serve", help="run the SOAP service under gunicorn")
    serve.add_argument("--bind", help="HOST:PORT to listen on (default $ST_PROVIDER_BIND or 127.0.0.1:8080)")
    serve.add_argument(
        "--workers", type=_positive, help="worker processes (default $ST_PROVIDER_WORKERS or 2)"
    )
    serve.add_argument(
        "--threads", type=_positive, help="threads per worker (default $ST_PROVIDER_THREADS or 4)"
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run the embedded event delivery worker in this server",
    )
    serve.add_argument(
        "--gunicorn-config",
        metavar="FILE",
        help="gunicorn configuration file, e.g. deploy/gunicorn.conf.py (default $ST_PROVIDER_GUNICORN_CONFIG); "
        "--bind, --workers and --threads still win over it",
    )
    serve.set_defaults(handler=_cmd_serve)


def _positive(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_password()
    from provider.server import serve

    return serve(
        settings,
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        embedded_worker=not args.no_worker,
        gunicorn_config=args.gunicorn_config or settings.gunicorn_config,
        config_file=args.config,
    )
