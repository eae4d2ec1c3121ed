"""The SOAP transport: SOAP 1.1 and 1.2 on one URL, ``?wsdl``, and hostile-input handling.

A plain Spyne application speaks one SOAP version, caches its WSDL with the first
request's ``Host``, answers oversized bodies with a 500 (and truncates chunked
ones), and turns empty or mis-encoded bodies into plain-text 500s. So Spyne is used
here for what it does well, (de)serialising the contract types, and this module
owns everything around it:

1. the SOAP version comes from the content type (``text/xml`` -> 1.1,
   ``application/soap+xml`` -> 1.2) and every answer, faults included, is in it;
2. the body is read up to ``max_body_bytes`` (chunked too) and a larger one is
   refused with 413 without reading it whole;
3. the body is parsed once here with DTD loading, entity expansion and network
   access off; a DOCTYPE is refused outright; the parsed envelope is handed to
   Spyne (no second parse);
4. the operation is found from the body's first element. An operation in another
   namespace than the configured one is served when ``accept_namespaces`` accepts it
   (``*``: any), so a SmarterTrack whose proxy was generated with another namespace
   keeps working: the request's elements in that namespace are renamed into the
   configured one, the one Spyne application answers, and the answer's elements are
   renamed back, so the caller gets its own namespace. Nothing is built or kept per
   namespace (no classes, no cache): a request in a new namespace costs what any other
   request costs (libxml2 keeps each distinct name it has parsed, a few dozen bytes,
   as for any element name; worker recycling bounds that). Any other namespace, and
   those of the XML and SOAP specifications, are refused with a fault;
5. ``GET ?wsdl`` (any case) renders the contract with the configured public URL or
   the request's own address, fresh for every request.

Faults are short, fixed messages: never a stack trace, a path or the request's
content. Status codes: SOAP 1.1 faults are HTTP 500 (SOAP 1.1 section 6.2, as ASMX
does); SOAP 1.2 sender faults are 400 and receiver faults 500 (SOAP 1.2 part 2
section 7.5); transport problems keep their own code (405, 413, 415).

:meth:`SoapRouter.dispatch` returns a :class:`SoapResponse` carrying a
:class:`CallRecord` (operation, outcome, fault reason) for the caller to log and
count; it never raises for anything a client sends.
"""

from __future__ import annotations

import codecs
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from lxml import etree
from spyne import Application, MethodContext
from spyne.protocol.soap import Soap11, Soap12
from spyne.server import ServerBase

from provider.domain import CallRequest, CallResult
from provider.logging import quiet_spyne
from provider.settings import ANY_NAMESPACE, MAX_NAMESPACE_LENGTH
from provider.soap import codec
from provider.soap.contract import (
    OPERATION_NAMES,
    OPERATIONS,
    SERVICE_NAME,
    SOAP11_ENV,
    SOAP12_ENV,
    ContractTypes,
    OperationSpec,
    build_services,
    build_types,
)
from provider.soap.wsdl import WsdlDocument, service_address

log = logging.getLogger("provider.soap")

UNKNOWN_OPERATION: Final = "unknown"
READ_BLOCK: Final = 64 * 1024
_SPECS: Final = {spec.name: spec for spec in OPERATIONS}
# Namespaces of the XML and SOAP specifications: never a contract's, refused even with "*".
_RESERVED: Final = frozenset(
    {SOAP11_ENV, SOAP12_ENV, "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"}
)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
# libxml2's messages for bytes that do not decode ("Input is not proper UTF-8", "encoding error").
_ENCODING_ERROR = re.compile(r"not proper|encoding|unsupported|Char 0x", re.IGNORECASE)

CallFunction = Callable[[CallRequest], CallResult]


# --- outcome and response ------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    """What happened to one POST: for the structured log line and the metrics.

    ``operation`` is one of the seven names or ``"unknown"``; ``outcome`` is
    ``success``/``failure`` (the result's Success), ``fault`` (the request was
    refused) or ``error`` (an internal error); ``fault`` is a short fixed reason;
    ``permission_denied``: the domain refused the Web Service Password. ``request`` and
    ``result`` are the decoded call and the domain's answer, when it got that far (for
    the call journal).
    """

    operation: str
    outcome: str
    soap_version: str
    fault: str | None = None
    namespace: str | None = None
    permission_denied: bool = False
    request: CallRequest | None = None
    result: CallResult | None = None


@dataclass(frozen=True)
class SoapResponse:
    """A complete HTTP answer; ``record`` is ``None`` for anything but a SOAP call."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes
    record: CallRecord | None = None


@dataclass(frozen=True)
class SoapVersion:
    name: str
    envelope: str
    content_type: str
    sender: str
    receiver: str
    sender_status: str

    def fault(
        self, *, sender: bool, message: str, status: str | None = None, code: str | None = None
    ) -> tuple[str, bytes]:
        """(HTTP status, fault envelope) for a fault in this version.

        ``code`` overrides the Client/Sender or Server/Receiver code (``soap:VersionMismatch``).
        """
        env = self.envelope
        root = etree.Element(f"{{{env}}}Envelope", nsmap={"soap": env})
        fault = etree.SubElement(etree.SubElement(root, f"{{{env}}}Body"), f"{{{env}}}Fault")
        code = code or (self.sender if sender else self.receiver)
        if env == SOAP11_ENV:
            etree.SubElement(fault, "faultcode").text = code
            etree.SubElement(fault, "faultstring").text = message
            # SOAP 1.1 section 4.4: detail is present when the Body was not processed; ASMX
            # always writes it, and .NET raises SoapHeaderException for a fault without it.
            etree.SubElement(fault, "detail")
        else:
            value = etree.SubElement(etree.SubElement(fault, f"{{{env}}}Code"), f"{{{env}}}Value")
            value.text = code
            reason = etree.SubElement(fault, f"{{{env}}}Reason")
            text = etree.SubElement(reason, f"{{{env}}}Text")
            text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            text.text = message
        body = etree.tostring(root, xml_declaration=True, encoding="utf-8")
        return status or (self.sender_status if sender else "500 Internal Server Error"), body


SOAP11: Final = SoapVersion(
    "1.1", SOAP11_ENV, "text/xml; charset=utf-8", "soap:Client", "soap:Server", "500 Internal Server Error"
)
SOAP12: Final = SoapVersion(
    "1.2",
    SOAP12_ENV,
    "application/soap+xml; charset=utf-8",
    "soap:Sender",
    "soap:Receiver",
    "400 Bad Request",
)
_BY_MEDIA_TYPE: Final = {"text/xml": SOAP11, "application/soap+xml": SOAP12}
_BY_ENVELOPE: Final = {SOAP11_ENV: SOAP11, SOAP12_ENV: SOAP12}


class _Refused(Exception):
    """A request the router answers with a fault; carries the fault's fields."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: str | None = None,
        operation: str = UNKNOWN_OPERATION,
        code: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.status = status
        self.operation = operation
        self.code = code


# --- Spyne, driven with an already parsed envelope ------------------------------


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
    call: _Call = ctx.udc
    if call.foreign is not None and ctx.out_document is not None:
        rename_namespace(ctx.out_document, ctx.app.tns, call.foreign)
        etree.cleanup_namespaces(ctx.out_document)


@dataclass
class _Call:
    """Per-request state, carried through Spyne in ``ctx.udc``."""

    envelope: etree._Element
    request_id: str
    client: str | None
    # The caller's namespace when it is not the configured one: the answer is renamed into it.
    foreign: str | None = None
    request: CallRequest | None = None
    result: CallResult | None = None
    failed: bool = False


class _SpyneServer(ServerBase):  # type: ignore[misc]
    """The smallest Spyne transport: one parsed envelope in, one serialised answer out."""

    transport = "http://schemas.xmlsoap.org/soap/http"

    def answer(self, call: _Call) -> tuple[Any, bytes | None]:
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
            _close(p_ctx)


def _close(ctx: Any) -> None:
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


# --- the router ------------------------------------------------------------------


class SoapRouter:
    """Answers SOAP requests for the seven operations with ``call`` (the domain entry).

    ``namespace`` is the contract's target namespace; ``accept_namespaces`` the other
    operation namespaces served (``"*"``: any; the configured one always is);
    ``public_url`` (optional) is the externally visible URL written into the WSDL;
    ``max_body_bytes`` caps request bodies. Thread-safe: one router serves every thread
    of a worker. The Spyne applications are built here, once; requests build nothing.
    """

    def __init__(
        self,
        call: CallFunction,
        *,
        namespace: str,
        max_body_bytes: int,
        public_url: str | None = None,
        accept_namespaces: Iterable[str] = (ANY_NAMESPACE,),
    ) -> None:
        quiet_spyne()
        # Spyne logs every fault raised in a service at ERROR with a traceback; ours never raise.
        # Same for refused input in spyne.server (its message can quote the input), and
        # the registry's warning that a second application (SOAP 1.2) shares a name.
        for name in ("spyne.application", "spyne.server", "spyne.util.appreg"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._call = call
        self.namespace = namespace
        self.max_body_bytes = max_body_bytes
        self.public_address = service_address(public_url) if public_url else None
        accepted = frozenset(accept_namespaces)
        self.accept_any = ANY_NAMESPACE in accepted
        self.accepted_namespaces = accepted - {ANY_NAMESPACE} | {namespace}
        self._wsdl = WsdlDocument(namespace)
        self._servers = self._build_servers(namespace)
        self._parsers = threading.local()

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
        version = _BY_MEDIA_TYPE.get(media_type)
        if version is None:
            return self._transport_fault(
                SOAP11,
                "content_type",
                "Unsupported content type: use text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2).",
                "415 Unsupported Media Type",
            )
        try:
            body = self._read_body(environ)
            envelope = self._parse(body, params.get("charset"), version)
            spec, foreign = self._operation(envelope, version)
        except _Refused as refused:
            return self._fault(version, refused, operation=refused.operation)
        call = _Call(envelope=envelope, request_id=request_id, client=client, foreign=foreign)
        return self._answer(version, spec, call)

    # --- steps ------------------------------------------------------------------------

    def _read_body(self, environ: Mapping[str, Any]) -> bytes:
        limit = self.max_body_bytes
        too_large = _Refused(
            "too_large", f"The request body is larger than {limit} bytes.", status="413 Content Too Large"
        )
        raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ.get("wsgi.input")
        if raw_length:
            try:
                length = int(raw_length)
            except ValueError:
                raise _Refused("bad_length", "Invalid Content-Length.", status="400 Bad Request") from None
            if length > limit:
                raise too_large
            if length <= 0 or stream is None:
                raise _Refused("empty", "The request body is empty.")
            return bytes(stream.read(length))
        if stream is None:
            raise _Refused("empty", "The request body is empty.")
        # No length: chunked (or read to the end). Read at most limit + 1 bytes.
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = stream.read(min(READ_BLOCK, limit + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if size > limit:
            raise too_large
        return b"".join(parts)

    def _parser(self, charset: str | None) -> etree.XMLParser:
        parsers: dict[str | None, etree.XMLParser] | None = getattr(self._parsers, "by_charset", None)
        if parsers is None:
            parsers = self._parsers.by_charset = {}
        parser = parsers.get(charset)
        if parser is None:
            parser = etree.XMLParser(
                encoding=charset,
                resolve_entities=False,
                load_dtd=False,
                dtd_validation=False,
                no_network=True,
                huge_tree=False,
                remove_comments=True,
                remove_pis=True,
                collect_ids=False,
            )
            if len(parsers) < 8:
                parsers[charset] = parser
        return parser

    def _parse(self, body: bytes, charset: str | None, version: SoapVersion) -> etree._Element:
        if not body.strip():
            raise _Refused("empty", "The request body is empty.")
        if charset is not None:
            charset = charset.strip().lower()
            try:
                charset = codecs.lookup(charset).name
            except LookupError:
                raise _Refused("charset", "Unsupported charset in the Content-Type header.") from None
        try:
            root = etree.fromstring(body, self._parser(charset))
        except etree.XMLSyntaxError as exc:
            if b"<!DOCTYPE" in body or b"<\x00!\x00D\x00O\x00C" in body:
                raise _Refused("doctype", "DOCTYPE declarations are not allowed.") from None
            if _ENCODING_ERROR.search(str(exc)):
                raise _Refused("charset", "The request body does not match its charset.") from None
            raise _Refused("malformed", "The request is not well-formed XML.") from None
        except (ValueError, LookupError):
            raise _Refused("charset", "The request body does not match its charset.") from None
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            raise _Refused("doctype", "DOCTYPE declarations are not allowed.")
        if root.tag != f"{{{version.envelope}}}Envelope":
            if isinstance(root.tag, str) and root.tag.startswith("{") and root.tag.endswith("}Envelope"):
                other = _BY_ENVELOPE.get(root.tag[1:].partition("}")[0])
                if other is not None:
                    raise _Refused(
                        "version_mismatch",
                        f"SOAP {other.name} envelope sent with the SOAP {version.name} content type.",
                        status="500 Internal Server Error",
                        code="soap:VersionMismatch",
                    )
            raise _Refused("not_envelope", "The request is not a SOAP envelope.")
        return root

    def _operation(self, envelope: etree._Element, version: SoapVersion) -> tuple[OperationSpec, str | None]:
        """The operation named by the body's first element, and its namespace if foreign.

        A foreign namespace that is accepted is renamed into the configured one in place
        (the operation element and its descendants), so the one Spyne application reads it.
        """
        body = envelope.find(f"{{{version.envelope}}}Body")
        if body is None or len(body) == 0:
            raise _Refused("no_operation", "The SOAP body names no operation.")
        element = body[0]
        qname = etree.QName(element)
        if qname.localname not in OPERATION_NAMES:
            raise _Refused("unknown_operation", "Unknown operation.")
        namespace = qname.namespace or ""
        if not namespace or len(namespace) > MAX_NAMESPACE_LENGTH:
            raise _Refused("unknown_operation", "Unknown operation namespace.", operation=qname.localname)
        if namespace == self.namespace:
            return _SPECS[qname.localname], None
        if namespace in _RESERVED or not (self.accept_any or namespace in self.accepted_namespaces):
            raise _Refused(
                "namespace",
                "The operation's namespace is not accepted: use the namespace in this service's WSDL.",
                operation=qname.localname,
            )
        rename_namespace(element, namespace, self.namespace)
        return _SPECS[qname.localname], namespace

    def _answer(self, version: SoapVersion, spec: OperationSpec, call: _Call) -> SoapResponse:
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
            status, fault = version.fault(sender=False, message=f"Internal error (request id {request_id})")
            record = CallRecord(spec.name, "error", version.name, "internal", namespace, request=call.request)
            return SoapResponse(status, _xml_headers(version, fault), fault, record)
        if body is None:
            # Spyne refused the content (a value that does not fit the contract).
            error = ctx.in_error or ctx.out_error
            sender = str(getattr(error, "faultcode", "Client")).startswith("Client")
            status, fault = version.fault(sender=sender, message="The request does not match the contract.")
            record = CallRecord(spec.name, "fault", version.name, "invalid", namespace)
            return SoapResponse(status, _xml_headers(version, fault), fault, record)
        result = call.result
        outcome = "success" if result is not None and result.success else "failure"
        denied = result is not None and result.permission_denied
        record = CallRecord(
            spec.name,
            outcome,
            version.name,
            None,
            namespace,
            permission_denied=denied,
            request=call.request,
            result=result,
        )
        return SoapResponse("200 OK", _xml_headers(version, body), body, record)

    def _invoke(self, spec: OperationSpec, inputs: Any, types: ContractTypes, call: _Call) -> Any:
        """Spyne's service methods land here: decode, call the domain, encode."""
        try:
            request = codec.decode_request(
                spec.operation, inputs, client_address=call.client, request_id=call.request_id
            )
            call.request = request
            result = self._call(request)
            call.result = result
            return codec.encode_result(spec, result, types)
        except Exception:  # a bug below: answered as an internal-error fault
            log.exception(
                "operation failed",
                extra={"event": "soap.internal_error", "operation": spec.name, "request_id": call.request_id},
            )
            call.failed = True
            return None

    # --- the Spyne applications ----------------------------------------------------------

    def _build_servers(self, namespace: str) -> dict[str, _SpyneServer]:
        """The SOAP 1.1 and 1.2 Spyne servers of the contract in ``namespace`` (built once)."""
        types = build_types(namespace)
        services = build_services(types, self._invoke)
        servers = {}
        for version, protocol in (("1.1", _Soap11In), ("1.2", _Soap12In)):
            app = Application(
                services,
                tns=namespace,
                name=SERVICE_NAME,
                in_protocol=protocol(),
                out_protocol=protocol(),
            )
            servers[version] = _SpyneServer(app)
        return servers

    # --- faults -------------------------------------------------------------------------

    def _fault(self, version: SoapVersion, refused: _Refused, *, operation: str) -> SoapResponse:
        status, body = version.fault(
            sender=True, message=refused.message, status=refused.status, code=refused.code
        )
        record = CallRecord(operation, "fault", version.name, refused.reason)
        return SoapResponse(status, _xml_headers(version, body), body, record)

    def _transport_fault(self, version: SoapVersion, reason: str, message: str, status: str) -> SoapResponse:
        code, body = version.fault(sender=True, message=message, status=status)
        headers = _xml_headers(version, body)
        if status.startswith("405"):
            headers.append(("Allow", "GET, HEAD, POST"))
        return SoapResponse(code, headers, body, CallRecord(UNKNOWN_OPERATION, "fault", version.name, reason))


def _xml_headers(version: SoapVersion, body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", version.content_type), ("Content-Length", str(len(body)))]


# --- helpers (pure) ------------------------------------------------------------------------


def rename_namespace(element: etree._Element, old: str, new: str) -> None:
    """Move ``element`` and its descendants that are in namespace ``old`` into ``new``, in place.

    Elements in other namespaces (or none), attributes and text are left as they are.
    """
    prefix = f"{{{old}}}"
    for node in list(element.iter(f"{prefix}*")):
        node.tag = f"{{{new}}}{node.tag[len(prefix) :]}"


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``"Text/XML; charset="utf-8""`` -> ``("text/xml", {"charset": "utf-8"})``."""
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, sep, raw = part.partition("=")
        if sep:
            params[name.strip().lower()] = raw.strip().strip('"').strip("'")
    return media_type.strip().lower(), params


def is_wsdl_query(query: str) -> bool:
    """Whether a query string asks for the WSDL (``wsdl``, ``WSDL``, ``wsdl=``, ``Wsdl&x``)."""
    return any(part.partition("=")[0].strip().lower() == "wsdl" for part in query.split("&"))


def request_address(environ: Mapping[str, Any]) -> str:
    """The URL this request was sent to (scheme, validated Host, path), without the query."""
    scheme = str(environ.get("wsgi.url_scheme") or "http")
    if scheme not in ("http", "https"):
        scheme = "http"
    host = str(environ.get("HTTP_HOST") or "")
    if not _HOST.fullmatch(host):
        server = str(environ.get("SERVER_NAME") or "localhost")
        port = str(environ.get("SERVER_PORT") or "")
        default_port = "443" if scheme == "https" else "80"
        host = server if not port or port == default_port else f"{server}:{port}"
        if not _HOST.fullmatch(host):
            host = "localhost"
    path = str(environ.get("SCRIPT_NAME") or "") + str(environ.get("PATH_INFO") or "/")
    return f"{scheme}://{host}{quote(path, safe=_PATH_SAFE) or '/'}"
