"""The SOAP transport: SOAP 1.1 and 1.2 on one URL, ``?wsdl``, and hostile-input handling.

A plain Spyne application speaks one SOAP version, caches its WSDL with the first
request's ``Host``, answers oversized bodies with a 500 (and truncates chunked
ones), and turns empty or mis-encoded bodies into plain-text 500s. So Spyne is used
here for what it does well, (de)serialising the contract types (:mod:`provider.soap.spyne_server`),
and this module owns everything around it:

1. the SOAP version comes from the content type (``text/xml`` -> 1.1,
   ``application/soap+xml`` -> 1.2) and every answer, faults included, is in it
   (:mod:`provider.soap.versions`);
2. the body is read, bounded, and parsed once, safely (:mod:`provider.soap.request`:
   413 for an oversized body, a DOCTYPE refused outright, no entity expansion or
   network access); the parsed envelope is handed to Spyne (no second parse);
3. the operation is found from the body's first element. An operation in another
   namespace than the configured one is served when ``accept_namespaces`` accepts it
   (``*``: any), so a SmarterTrack whose proxy was generated with another namespace
   keeps working: the request's elements in that namespace are renamed into the
   configured one, the one Spyne application answers, and the answer's elements are
   renamed back, so the caller gets its own namespace. Nothing is built or kept per
   namespace (no classes, no cache): a request in a new namespace costs what any other
   request costs (libxml2 keeps each distinct name it has parsed, a few dozen bytes,
   as for any element name; worker recycling bounds that). Any other namespace, and
   those of the XML and SOAP specifications, are refused with a fault;
4. an ordinary call (SmarterTrack's one request shape, UTF-8) is read and answered by
   :mod:`provider.soap.fastpath`, byte for byte as Spyne would answer it; anything else goes
   through Spyne, and so does an answer the fast writer declines (the domain is called once);
5. ``GET ?wsdl`` (any case) renders the contract with the configured public URL or
   the request's own address, fresh for every request.

Faults are short, fixed messages: never a stack trace, a path or the request's
content. Status codes: SOAP 1.1 faults are HTTP 500 (SOAP 1.1 section 6.2, as ASMX
does); SOAP 1.2 sender faults are 400 and receiver faults 500 (SOAP 1.2 part 2
section 7.5); transport problems keep their own code (405, 413, 415).

:meth:`SoapRouter.dispatch` returns a :class:`SoapResponse` carrying a
:class:`CallRecord` (operation, outcome, fault reason) for the caller to log and
count; it never raises for anything a client sends. Spyne's own loggers are quieted
by the logging configuration (:func:`provider.logging.quiet_spyne`), not here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from provider.domain import CallRequest, CallResult
from provider.settings import ANY_NAMESPACE, MAX_NAMESPACE_LENGTH
from provider.soap import codec
from provider.soap.contract import (
    OPERATION_NAMES,
    OPERATIONS,
    SOAP11_ENV,
    SOAP12_ENV,
    ContractTypes,
    OperationSpec,
)
from provider.soap.fastpath import FastReader, FastWriter, utf8_request
from provider.soap.request import (
    UNKNOWN_OPERATION,
    EnvelopeParser,
    Refused,
    is_wsdl_query,
    parse_content_type,
    read_body,
    rename_namespace,
    request_address,
)
from provider.soap.spyne_server import SpyneCall, build_servers
from provider.soap.versions import BY_MEDIA_TYPE, SOAP11, SoapVersion, xml_headers
from provider.soap.wsdl import WsdlDocument, service_address
from provider.variables import InputVariables

log = logging.getLogger("provider.soap")

_SPECS: Final = {spec.name: spec for spec in OPERATIONS}
# Namespaces of the XML and SOAP specifications: never a contract's, refused even with "*".
_RESERVED: Final = frozenset(
    {SOAP11_ENV, SOAP12_ENV, "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"}
)

CallFunction = Callable[[CallRequest], CallResult]


@dataclass(frozen=True)
class CallRecord:
    """What happened to one POST: for the structured log line and the metrics.

    ``operation`` is one of the seven names or ``"unknown"``; ``outcome`` is
    ``success``/``failure`` (the result's Success), ``fault`` (the request was
    refused) or ``error`` (an internal error); ``fault`` is a short fixed reason;
    ``permission_denied``: the domain refused the Web Service Password. ``request`` and
    ``result`` are the decoded call and the domain's answer, when it got that far (for
    the call journal). ``fast_path``: the answer was read and written by
    :mod:`provider.soap.fastpath` rather than Spyne.
    """

    operation: str
    outcome: str
    soap_version: str
    fault: str | None = None
    namespace: str | None = None
    permission_denied: bool = False
    request: CallRequest | None = None
    result: CallResult | None = None
    fast_path: bool = False


@dataclass(frozen=True)
class SoapResponse:
    """A complete HTTP answer of the SOAP endpoint; ``record`` is ``None`` for ``?wsdl``."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes
    record: CallRecord | None = None


# --- the router ------------------------------------------------------------------


class SoapRouter:
    """Answers SOAP requests for the seven operations with ``call`` (the domain entry).

    ``namespace`` is the contract's target namespace; ``accept_namespaces`` the other
    operation namespaces served (``"*"``: any; the configured one always is);
    ``public_url`` (optional) is the externally visible URL written into the WSDL;
    ``max_body_bytes`` caps request bodies. Thread-safe: one router serves every thread
    of a worker. The Spyne applications are built here, once; requests build nothing.
    ``fast_path`` (on by default) answers ordinary calls without Spyne's generic
    (de)serialisation (:mod:`provider.soap.fastpath`); off, every call goes through Spyne.
    """

    def __init__(
        self,
        call: CallFunction,
        *,
        namespace: str,
        max_body_bytes: int,
        public_url: str | None = None,
        accept_namespaces: Iterable[str] = (ANY_NAMESPACE,),
        fast_path: bool = True,
    ) -> None:
        self._call = call
        self.namespace = namespace
        self.max_body_bytes = max_body_bytes
        self.public_address = service_address(public_url) if public_url else None
        accepted = frozenset(accept_namespaces)
        self.accept_any = ANY_NAMESPACE in accepted
        self.accepted_namespaces = accepted - {ANY_NAMESPACE} | {namespace}
        self._wsdl = WsdlDocument(namespace)
        self._servers = build_servers(namespace, self._invoke)
        self._envelopes = EnvelopeParser()
        self._reader = FastReader(namespace) if fast_path else None
        self._writer = FastWriter(namespace)

    # --- entry points ---------------------------------------------------------------

    def dispatch(self, environ: Mapping[str, Any], *, request_id: str, client: str | None) -> SoapResponse:
        """Answer one HTTP request on the SOAP endpoint (any method)."""
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in ("GET", "HEAD"):
            if is_wsdl_query(str(environ.get("QUERY_STRING", ""))):
                response = self.wsdl(environ)
                if method == "HEAD":
                    return SoapResponse(response.status, response.headers, b"")
                return response
            return self._transport_fault(
                SOAP11,
                "method",
                "Use POST for SOAP calls, or GET ?wsdl for the contract.",
                "405 Method Not Allowed",
            )
        if method != "POST":
            return self._transport_fault(
                SOAP11, "method", "Use POST for SOAP calls.", "405 Method Not Allowed"
            )
        return self.post(environ, request_id=request_id, client=client)

    def wsdl(self, environ: Mapping[str, Any]) -> SoapResponse:
        """The contract, with this request's service address (never cached)."""
        address = self.public_address or request_address(environ)
        body = self._wsdl.render(address)
        headers = [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(body)))]
        return SoapResponse("200 OK", headers, body)

    def post(self, environ: Mapping[str, Any], *, request_id: str, client: str | None) -> SoapResponse:
        media_type, params = parse_content_type(str(environ.get("CONTENT_TYPE") or ""))
        version = BY_MEDIA_TYPE.get(media_type)
        if version is None:
            return self._transport_fault(
                SOAP11,
                "content_type",
                "Unsupported content type: use text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2).",
                "415 Unsupported Media Type",
            )
        try:
            body = read_body(environ, self.max_body_bytes)
            envelope = self._envelopes.parse(body, params.get("charset"), version)
            spec, foreign = self._operation(envelope, version)
        except Refused as refused:
            return self._fault(version, refused, operation=refused.operation)
        call = SpyneCall(envelope=envelope, request_id=request_id, client=client, foreign=foreign)
        entries = self._ordinary_entries(call, version, params.get("charset"), spec)
        if entries is not None:
            return self._fast_answer(version, spec, call, entries)
        return self._answer(version, spec, call)

    # --- steps ------------------------------------------------------------------------

    def _operation(self, envelope: etree._Element, version: SoapVersion) -> tuple[OperationSpec, str | None]:
        """The operation named by the body's first element, and its namespace if foreign.

        A foreign namespace that is accepted is renamed into the configured one in place
        (the operation element and its descendants), so the one Spyne application reads it.
        """
        body = envelope.find(f"{{{version.envelope}}}Body")
        if body is None or len(body) == 0:
            raise Refused("no_operation", "The SOAP body names no operation.")
        element = body[0]
        qname = etree.QName(element)
        if qname.localname not in OPERATION_NAMES:
            raise Refused("unknown_operation", "Unknown operation.")
        namespace = qname.namespace or ""
        if not namespace or len(namespace) > MAX_NAMESPACE_LENGTH:
            raise Refused("unknown_operation", "Unknown operation namespace.", operation=qname.localname)
        if namespace == self.namespace:
            return _SPECS[qname.localname], None
        if namespace in _RESERVED or not (self.accept_any or namespace in self.accepted_namespaces):
            raise Refused(
                "namespace",
                "The operation's namespace is not accepted: use the namespace in this service's WSDL.",
                operation=qname.localname,
            )
        rename_namespace(element, namespace, self.namespace)
        return _SPECS[qname.localname], namespace

    def _ordinary_entries(
        self, call: SpyneCall, version: SoapVersion, charset: str | None, spec: OperationSpec
    ) -> list[str] | None:
        """The call's input strings when the fast path may answer it, else ``None`` (Spyne answers)."""
        if self._reader is None:
            return None
        try:
            if not utf8_request(charset, call.envelope):
                return None
            return self._reader.entries(call.envelope, version)
        except Exception:  # a bug in the reader: Spyne reads the request instead
            log.exception(
                "fast path reader failed",
                extra={
                    "event": "soap.fastpath_failed",
                    "operation": spec.name,
                    "request_id": call.request_id,
                    "step": "read",
                },
            )
            return None

    def _fast_answer(
        self, version: SoapVersion, spec: OperationSpec, call: SpyneCall, entries: list[str]
    ) -> SoapResponse:
        """Answer an ordinary call: the domain once, then the fast writer (Spyne writes on any doubt)."""
        try:
            request = CallRequest(
                operation=spec.operation,
                variables=InputVariables.parse(entries),
                client_address=call.client,
                request_id=call.request_id,
            )
            call.request = request
            call.result = self._call(request)
        except Exception:  # a bug below: answered as an internal-error fault, as on the Spyne path
            log.exception(
                "operation failed",
                extra={"event": "soap.internal_error", "operation": spec.name, "request_id": call.request_id},
            )
            return self._internal_error(version, spec, call)
        try:
            body = self._writer.write(spec, version, codec.result_values(spec, call.result), call.foreign)
        except Exception:  # a bug in the writer: Spyne writes the same result instead
            log.exception(
                "fast path writer failed",
                extra={
                    "event": "soap.fastpath_failed",
                    "operation": spec.name,
                    "request_id": call.request_id,
                    "step": "write",
                },
            )
            body = None
        if body is None:
            return self._answer(version, spec, call)
        return self._success(version, spec, call, body, fast_path=True)

    def _answer(self, version: SoapVersion, spec: OperationSpec, call: SpyneCall) -> SoapResponse:
        request_id, namespace = call.request_id, call.foreign
        try:
            ctx, body = self._servers[version.name].answer(call)
        except Exception:  # any failure in Spyne: answered, logged with its traceback
            log.exception(
                "SOAP processing failed",
                extra={"event": "soap.internal_error", "operation": spec.name, "request_id": request_id},
            )
            call.failed = True
            ctx, body = None, None
        if call.failed or ctx is None:
            return self._internal_error(version, spec, call)
        if body is None:
            # Spyne refused the content (a value that does not fit the contract).
            error = ctx.in_error or ctx.out_error
            sender = str(getattr(error, "faultcode", "Client")).startswith("Client")
            status, fault = version.fault(sender=sender, message="The request does not match the contract.")
            record = CallRecord(spec.name, "fault", version.name, "invalid", namespace)
            return SoapResponse(status, xml_headers(version, fault), fault, record)
        return self._success(version, spec, call, body)

    @staticmethod
    def _success(
        version: SoapVersion, spec: OperationSpec, call: SpyneCall, body: bytes, *, fast_path: bool = False
    ) -> SoapResponse:
        """The 200 answer carrying ``body``, the domain's result for ``call``."""
        result = call.result
        outcome = "success" if result is not None and result.success else "failure"
        denied = result is not None and result.permission_denied
        record = CallRecord(
            spec.name,
            outcome,
            version.name,
            None,
            call.foreign,
            permission_denied=denied,
            request=call.request,
            result=result,
            fast_path=fast_path,
        )
        return SoapResponse("200 OK", xml_headers(version, body), body, record)

    @staticmethod
    def _internal_error(version: SoapVersion, spec: OperationSpec, call: SpyneCall) -> SoapResponse:
        status, fault = version.fault(sender=False, message=f"Internal error (request id {call.request_id})")
        record = CallRecord(spec.name, "error", version.name, "internal", call.foreign, request=call.request)
        return SoapResponse(status, xml_headers(version, fault), fault, record)

    def _invoke(self, spec: OperationSpec, inputs: Any, types: ContractTypes, call: SpyneCall) -> Any:
        """Spyne's service methods land here: decode, call the domain, encode.

        A call the fast path already answered (``call.result`` set, its writer declined)
        is only encoded: the domain is never called twice.
        """
        try:
            if call.result is None:
                request = codec.decode_request(
                    spec.operation, inputs, client_address=call.client, request_id=call.request_id
                )
                call.request = request
                call.result = self._call(request)
            return codec.encode_result(spec, call.result, types)
        except Exception:  # a bug below: answered as an internal-error fault
            log.exception(
                "operation failed",
                extra={"event": "soap.internal_error", "operation": spec.name, "request_id": call.request_id},
            )
            call.failed = True
            return None

    # --- faults -------------------------------------------------------------------------

    def _fault(self, version: SoapVersion, refused: Refused, *, operation: str) -> SoapResponse:
        status, body = version.fault(
            sender=True, message=refused.message, status=refused.status, code=refused.code
        )
        record = CallRecord(operation, "fault", version.name, refused.reason)
        return SoapResponse(status, xml_headers(version, body), body, record)

    def _transport_fault(self, version: SoapVersion, reason: str, message: str, status: str) -> SoapResponse:
        code, body = version.fault(sender=True, message=message, status=status)
        headers = xml_headers(version, body)
        if status.startswith("405"):
            headers.append(("Allow", "GET, HEAD, POST"))
        return SoapResponse(code, headers, body, CallRecord(UNKNOWN_OPERATION, "fault", version.name, reason))
