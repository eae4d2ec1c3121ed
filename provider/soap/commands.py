"""The `st-provider wsdl` sub-command: ``wsdl [--url BASE]`` prints the contract, with ``BASE``
(or the public URL) as the service address.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from provider.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``wsdl`` to the CLI."""
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
