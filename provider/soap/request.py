"""Reading and parsing a SOAP request, refusing hostile input: the steps before an operation is known.

* the body is read up to ``max_body_bytes`` (chunked too) and a larger one is refused
  with 413 without reading it whole (:func:`read_body`);
* the body is parsed with DTD loading, entity expansion and network access off; a
  DOCTYPE is refused outright, as are bodies that do not match their charset and
  envelopes of the other SOAP version (:class:`EnvelopeParser`);
* the pure helpers: the content type, the ``?wsdl`` query, the request's own address,
  renaming a namespace.

Every refusal is a :class:`Refused` carrying a short fixed message (never the request's
content) for the router to answer as a fault.
"""

from __future__ import annotations

import codecs
import re
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from lxml import etree

from provider.soap.versions import BY_ENVELOPE, SoapVersion

UNKNOWN_OPERATION: Final = "unknown"
READ_BLOCK: Final = 64 * 1024
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
# libxml2's messages for bytes that do not decode ("Input is not proper UTF-8", "encoding error").
_ENCODING_ERROR = re.compile(r"not proper|encoding|unsupported|Char 0x", re.IGNORECASE)
#: Parsers kept per thread, one per charset seen (a few at most).
_PARSERS_PER_THREAD: Final = 8


class Refused(Exception):
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


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; raises :class:`Refused` otherwise.

    With a ``Content-Length`` exactly that many bytes are read; without one (chunked)
    at most ``limit + 1``, so an oversized body is never read whole.
    """
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ.get("wsgi.input")
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            raise Refused("bad_length", "Invalid Content-Length.", status="400 Bad Request") from None
        if length > limit:
            raise _too_large(limit)
        if length <= 0 or stream is None:
            raise Refused("empty", "The request body is empty.")
        return bytes(stream.read(length))
    if stream is None:
        raise Refused("empty", "The request body is empty.")
    body = _read_to_end(stream, limit + 1)
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _too_large(limit: int) -> Refused:
    return Refused(
        "too_large", f"The request body is larger than {limit} bytes.", status="413 Content Too Large"
    )


def _read_to_end(stream: Any, most: int) -> bytes:
    """Read ``stream`` to its end or to ``most`` bytes, whichever comes first."""
    parts: list[bytes] = []
    size = 0
    while size < most:
        chunk = stream.read(min(READ_BLOCK, most - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class EnvelopeParser:
    """Parses request bodies into SOAP envelopes, safely. Thread-safe (parsers are per thread)."""

    def __init__(self) -> None:
        self._parsers = threading.local()

    def parse(self, body: bytes, charset: str | None, version: SoapVersion) -> etree._Element:
        """The envelope of ``body`` (in ``version``); raises :class:`Refused` for anything else."""
        if not body.strip():
            raise Refused("empty", "The request body is empty.")
        root = self._parse_xml(body, _codec_name(charset))
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            raise Refused("doctype", "DOCTYPE declarations are not allowed.")
        if root.tag != f"{{{version.envelope}}}Envelope":
            raise _not_an_envelope(root, version)
        return root

    def _parse_xml(self, body: bytes, charset: str | None) -> etree._Element:
        try:
            return etree.fromstring(body, self._parser(charset))
        except etree.XMLSyntaxError as exc:
            if b"<!DOCTYPE" in body or b"<\x00!\x00D\x00O\x00C" in body:
                raise Refused("doctype", "DOCTYPE declarations are not allowed.") from None
            if _ENCODING_ERROR.search(str(exc)):
                raise Refused("charset", "The request body does not match its charset.") from None
            raise Refused("malformed", "The request is not well-formed XML.") from None
        except (ValueError, LookupError):
            raise Refused("charset", "The request body does not match its charset.") from None

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
            if len(parsers) < _PARSERS_PER_THREAD:
                parsers[charset] = parser
        return parser


def _codec_name(charset: str | None) -> str | None:
    """The canonical name of the Content-Type's charset; raises :class:`Refused` for an unknown one."""
    if charset is None:
        return None
    try:
        return codecs.lookup(charset.strip().lower()).name
    except LookupError:
        raise Refused("charset", "Unsupported charset in the Content-Type header.") from None


def _not_an_envelope(root: etree._Element, version: SoapVersion) -> Refused:
    """The refusal for a root that is not ``version``'s envelope (the other version's is a mismatch)."""
    if isinstance(root.tag, str) and root.tag.startswith("{") and root.tag.endswith("}Envelope"):
        other = BY_ENVELOPE.get(root.tag[1:].partition("}")[0])
        if other is not None:
            return Refused(
                "version_mismatch",
                f"SOAP {other.name} envelope sent with the SOAP {version.name} content type.",
                status="500 Internal Server Error",
                code="soap:VersionMismatch",
            )
    return Refused("not_envelope", "The request is not a SOAP envelope.")


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
