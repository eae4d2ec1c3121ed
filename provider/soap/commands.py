"""The `st-provider` sub-commands of the soap capability: ``call``, ``wsdl``.

(``serve`` is :mod:`provider.server_commands`'.)

* ``call OP name=value ... [--url URL] [--soap12] [--explain]`` sends one real SOAP
  call to a running provider (adding ``authPW`` from the settings unless given) and
  prints the result; exit 0 when ``Success`` is true and, for a login (Authenticate,
  GetSignInCookieInfo), ``Authentication=OK``; 1 otherwise (faults and network errors
  too). With ``--explain``, a refused login is explained from the provider's database
  (run it where the service's settings and database are: see
  :mod:`provider.auth.explain`). This is the administrator's "test connection" tool.
* ``wsdl [--url BASE]`` prints the contract, with ``BASE`` (or the public URL) as the
  service address.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from provider.domain import Operation
from provider.errors import ConfigError
from provider.settings import Settings

CALL_TIMEOUT_SECONDS = 30.0
_LOCAL_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - a bind-all address, mapped to loopback


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the CLI."""
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

    wsdl = subparsers.add_parser("wsdl", help="print the WSDL contract")
    wsdl.add_argument("--url", help="base URL (or .asmx URL) written as the service address")
    wsdl.set_defaults(handler=_cmd_wsdl)


# --- wsdl --------------------------------------------------------------------------


def _cmd_wsdl(args: argparse.Namespace, settings: Settings) -> int:
    from provider.soap.wsdl import DEFAULT_ADDRESS, WsdlDocument, service_address

    base = args.url or settings.public_url
    address = service_address(base) if base else DEFAULT_ADDRESS
    sys.stdout.write(WsdlDocument(settings.namespace).render(address).decode("utf-8"))
    sys.stdout.flush()
    return 0


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
