"""The `st-provider` sub-commands that run the service and test a running one: ``serve``, ``call``.

* ``serve [--bind HOST:PORT] [--workers N] [--threads N] [--no-worker] [--gunicorn-config FILE]``
  runs gunicorn (:mod:`provider.server`); it refuses to start without the Web Service Password.
* ``call OP name=value ... [--url URL] [--soap12] [--explain]`` sends one real SOAP
  call to a running provider (adding ``authPW`` from the settings unless given) and
  prints the result; exit 0 when ``Success`` is true and, for a login (Authenticate,
  GetSignInCookieInfo), ``Authentication=OK``; 1 otherwise (faults and network errors
  too). With ``--explain``, a refused login is explained from the provider's database
  (run it where the service's settings and database are: see
  :mod:`provider.auth.explain`). This is the administrator's "test connection" tool.

This module imports nothing heavy: :mod:`provider.server`, the SOAP client and the
login explanation are imported when their command runs (``serve`` must start with
nothing loaded that comes after its set-up).
"""

from __future__ import annotations

import argparse
from typing import Any

from provider.domain import Operation
from provider.errors import ConfigError
from provider.settings import Settings

CALL_TIMEOUT_SECONDS = 30.0
_LOCAL_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - a bind-all address, mapped to loopback


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` and ``call`` to the CLI."""
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

    call = subparsers.add_parser("call", help="send one SOAP call to a running provider and print the result")
    call.add_argument("operation", metavar="OP", help=", ".join(op.value for op in Operation))
    call.add_argument("variables", nargs="*", metavar="NAME=VALUE", help="input variables")
    call.add_argument(
        "--url", help="the provider's endpoint (default from the public URL or the bind address)"
    )
    call.add_argument("--soap12", action="store_true", help="use SOAP 1.2 instead of SOAP 1.1")
    call.add_argument("--timeout", type=float, default=CALL_TIMEOUT_SECONDS, help="seconds (default 30)")
    call.add_argument(
        "--explain",
        action="store_true",
        help="when a login is refused, print the reason the server recorded "
        "(reads the provider's database: run it with the service's settings)",
    )
    call.set_defaults(handler=_cmd_call)


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


# --- call --------------------------------------------------------------------------


def default_endpoint(settings: Settings) -> str:
    """Where ``call`` sends by default: the public URL, else this host's bind address."""
    from provider.soap.wsdl import service_address

    if settings.public_url:
        return service_address(settings.public_url)
    host, _, port = settings.bind.rpartition(":")
    if host in _LOCAL_HOSTS:
        host = "127.0.0.1"
    return service_address(f"http://{host}:{port}")


def _operation(name: str) -> Operation:
    for operation in Operation:
        if operation.value.lower() == name.strip().lower():
            return operation
    raise ConfigError(f"unknown operation {name!r}: use one of {', '.join(op.value for op in Operation)}")


def _cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    from provider.auth.explain import LOGIN_OPERATIONS, explain_login
    from provider.soap.client import SoapFault, call_operation
    from provider.variables import InputVariables

    operation = _operation(args.operation)
    entries = list(args.variables)
    for entry in entries:
        if "=" not in entry:
            raise ConfigError(f"input variable {entry!r} is not NAME=VALUE")
    if not any(e.partition("=")[0].strip().lower() == "authpw" for e in entries):
        entries.insert(0, f"authPW={settings.require_password().reveal()}")
    url = args.url or default_endpoint(settings)
    try:
        answer = call_operation(
            url,
            operation,
            entries,
            namespace=settings.namespace,
            soap12=args.soap12,
            timeout=args.timeout,
        )
    except SoapFault as exc:
        print(f"Fault: {exc}")
        return 1
    print(answer.render(), end="")
    if not answer.success:
        return 1
    if operation not in LOGIN_OPERATIONS or (answer.outputs.get("Authentication") or "").upper() == "OK":
        return 0
    if args.explain:
        for line in explain_login(settings, operation, InputVariables.parse(entries)):
            print(line)
    else:
        print("login refused: run again with --explain (with the service's settings) to see why")
    return 1
