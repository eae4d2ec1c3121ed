"""The public help page of the SOAP endpoint, as ASMX shows one: ``GET /ExternalProvider.asmx``.

* no query: the service, its seven operations (each a link to ``?op=NAME``), where the WSDL is, and
  what to enter in SmarterTrack (the Web Service URL; the Web Service Password field, never the
  password itself);
* ``?op=NAME`` (any case): that operation's input variables and its sample SOAP 1.1 and 1.2
  request and response (:mod:`provider.web.samples`);
* ``?op=`` anything else: ``404`` with the list of operations.

The service address is worked out as for the WSDL: the configured public URL, else the request's
own (validated) address. Pages are rendered by Jinja2 with autoescaping, so nothing from the request
reaches the page unescaped. Every answer carries ``Allow: GET, HEAD, POST`` and security headers: a
Content-Security-Policy that allows no script and no outside resource (the one stylesheet is inline,
allowed by its hash), ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and
``X-Content-Type-Options: nosniff``. ``HEAD`` gets the headers without the body.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from provider.soap.contract import OPERATIONS, SERVICE_NAME, TYPES, OperationSpec
from provider.soap.request import request_address
from provider.web.operations import DOCS
from provider.web.samples import operation_samples

ALLOW: Final = "GET, HEAD, POST"
_BY_NAME: Final = {spec.name.lower(): spec for spec in OPERATIONS}
_STYLESHEET: Final = resources.files("provider.web").joinpath("static/help.css").read_text(encoding="utf-8")
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLESHEET.encode()).digest()).decode()
# Our own packaged file, never request data: safe to insert unescaped (its hash is in the CSP).
_STYLE_MARKUP: Final = Markup(_STYLESHEET)  # noqa: S704
CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)


@dataclass(frozen=True)
class PageResponse:
    """A complete HTTP answer: status line, headers, body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


class HelpPages:
    """Renders the help pages for a service in ``namespace``.

    ``public_address`` is the endpoint URL from ``ST_PROVIDER_PUBLIC_URL`` (as the WSDL's), or
    ``None`` to use each request's own address. Thread-safe; templates are loaded once.
    """

    def __init__(self, *, namespace: str, public_address: str | None) -> None:
        self.namespace = namespace
        self.public_address = public_address
        self._env = Environment(
            loader=PackageLoader("provider.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def respond(self, environ: Mapping[str, Any]) -> PageResponse:
        """The answer to a ``GET`` or ``HEAD`` of the endpoint without ``?wsdl``."""
        address = self.public_address or request_address(environ)
        requested = _op_parameter(str(environ.get("QUERY_STRING") or ""))
        context: dict[str, Any] = {
            "service": SERVICE_NAME,
            "address": address,
            "wsdl": f"{address}?wsdl",
            "operations": [(spec.name, DOCS[spec.operation].summary) for spec in OPERATIONS],
            "stylesheet": _STYLE_MARKUP,
        }
        if requested is None:
            status, body = "200 OK", self._render("help_index.html", context)
        elif (spec := _BY_NAME.get(requested.lower())) is not None:
            status, body = "200 OK", self._render("help_operation.html", self._op_context(spec, context))
        else:
            status = "404 Not Found"
            body = self._render("help_unknown.html", {**context, "requested": requested})
        if str(environ.get("REQUEST_METHOD", "GET")).upper() == "HEAD":
            return PageResponse(status, _headers(len(body)), b"")
        return PageResponse(status, _headers(len(body)), body)

    def _op_context(self, spec: OperationSpec, context: dict[str, Any]) -> dict[str, Any]:
        doc = DOCS[spec.operation]
        soap11, soap12 = operation_samples(
            spec, namespace=self.namespace, address=context["address"], variables=doc.variables
        )
        return {
            **context,
            "op": spec.name,
            "summary": doc.summary,
            "variables": doc.variables,
            "result": spec.result,
            "result_members": TYPES[spec.result],
            "samples": (soap11, soap12),
        }

    def _render(self, template: str, context: Mapping[str, Any]) -> bytes:
        return self._env.get_template(template).render(context).encode("utf-8")


def _op_parameter(query: str) -> str | None:
    """The value of ``op`` in the query (the parameter name in any case), or ``None`` without one."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.lower() == "op":
            return value
    return None


def _headers(length: int) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(length)),
        ("Allow", ALLOW),
        ("Cache-Control", "no-cache"),
        *SECURITY_HEADERS,
    ]
