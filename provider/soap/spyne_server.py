"""Spyne, driven with an envelope the router already parsed: (de)serialising the contract types.

:func:`build_servers` builds the SOAP 1.1 and 1.2 Spyne applications of the contract in
one namespace, once per router; :meth:`SpyneServer.answer` runs one call through one of
them. Per-request state travels in a :class:`SpyneCall` (Spyne's ``ctx.udc``). An answer
to a caller in another accepted namespace is renamed back into that namespace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lxml import etree
from spyne import Application, MethodContext
from spyne.protocol.soap import Soap11, Soap12
from spyne.server import ServerBase

from provider.domain import CallRequest, CallResult
from provider.soap.contract import SERVICE_NAME, Invoke, build_services, build_types
from provider.soap.request import rename_namespace


class _Soap11In(Soap11):  # type: ignore[misc]
    """Spyne's SOAP 1.1 protocol, taking the envelope the router parsed.

    Writes the answer in the caller's namespace (``ctx.udc.foreign``) when that is
    not the configured one.
    """

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        ctx.in_document = (ctx.udc.envelope, None)

    def create_out_string(self, ctx: Any, charset: str | None = None) -> None:
        _echo_namespace(ctx)
        super().create_out_string(ctx, charset)


class _Soap12In(Soap12):  # type: ignore[misc]
    """Spyne's SOAP 1.2 protocol, taking the envelope the router parsed (see :class:`_Soap11In`)."""

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        ctx.in_document = (ctx.udc.envelope, None)

    def create_out_string(self, ctx: Any, charset: str | None = None) -> None:
        _echo_namespace(ctx)
        super().create_out_string(ctx, charset)


def _echo_namespace(ctx: Any) -> None:
    """Rename the answer's elements from the configured namespace to the caller's."""
    call: SpyneCall = ctx.udc
    if call.foreign is not None and ctx.out_document is not None:
        rename_namespace(ctx.out_document, ctx.app.tns, call.foreign)
        etree.cleanup_namespaces(ctx.out_document)


@dataclass
class SpyneCall:
    """Per-request state, carried through Spyne in ``ctx.udc``."""

    envelope: etree._Element
    request_id: str
    client: str | None
    # The caller's namespace when it is not the configured one: the answer is renamed into it.
    foreign: str | None = None
    request: CallRequest | None = None
    result: CallResult | None = None
    failed: bool = False


class SpyneServer(ServerBase):  # type: ignore[misc]
    """The smallest Spyne transport: one parsed envelope in, one serialised answer out."""

    transport = "http://schemas.xmlsoap.org/soap/http"

    def answer(self, call: SpyneCall) -> tuple[Any, bytes | None]:
        """(Spyne context, response bytes); bytes are ``None`` when Spyne raised a fault."""
        ctx = MethodContext(self, MethodContext.SERVER)
        ctx.udc = call
        p_ctx = self.generate_contexts(ctx)[0]
        p_ctx.udc = call
        try:
            if p_ctx.in_error is None:
                self.get_in_object(p_ctx)
            if p_ctx.in_error is not None:
                return p_ctx, None
            self.get_out_object(p_ctx)
            if p_ctx.out_error is not None or call.failed:
                return p_ctx, None
            self.get_out_string(p_ctx)
            return p_ctx, b"".join(p_ctx.out_string)
        finally:
            _close_context(p_ctx)


def _close_context(ctx: Any) -> None:
    """``MethodContext.close`` without its forced ``gc.collect()``.

    Spyne runs a full collection at most once a second from ``close`` to release file
    handles of attachments; this contract has none, and a full collection stalls
    every thread of the worker (tens of milliseconds), which shows up as p99 latency.
    """
    ctx.call_end = time.time()
    ctx.app.event_manager.fire_event("method_context_closed", ctx)
    for handle in ctx.files:
        handle.close()
    ctx.is_closed = True


def build_servers(namespace: str, invoke: Invoke) -> dict[str, SpyneServer]:
    """The SOAP 1.1 and 1.2 Spyne servers of the contract in ``namespace``, by version name."""
    types = build_types(namespace)
    services = build_services(types, invoke)
    servers = {}
    for version, protocol in (("1.1", _Soap11In), ("1.2", _Soap12In)):
        app = Application(
            services,
            tns=namespace,
            name=SERVICE_NAME,
            in_protocol=protocol(),
            out_protocol=protocol(),
        )
        servers[version] = SpyneServer(app)
    return servers
