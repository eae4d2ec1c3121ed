"""The fast path: ordinary calls read and answered without Spyne's generic (de)serialisation.

SmarterTrack's .NET proxy sends every call in one shape, and every answer is one of the
contract's seven result types. For such an *ordinary* call this module replaces Spyne's
two costly steps; everything else keeps the Spyne path (:mod:`provider.soap.spyne_server`).

* :class:`FastReader` takes the envelope the router already parsed with its hardened
  parser (:class:`provider.soap.request.EnvelopeParser`: no DTD, no entities, no
  network, ``huge_tree`` off, DOCTYPE refused) and returns the ``InputVariables``
  strings when, and only when, the envelope is exactly::

      Envelope > Body > <Op> [> inputs [> InputVariables > string*]]

  in the operation's namespace (a foreign accepted one is already renamed by the
  router), with no attribute anywhere (so no ``xsi:nil``, no ``encodingStyle``), no
  ``Header``, no other element, no text outside the ``string`` elements but white space,
  and UTF-8 on the wire. Anything else returns ``None`` and the Spyne path answers.
* :class:`FastWriter` writes the ``<Op>Response`` for the values
  :func:`provider.soap.codec.result_values` prepared (the same values the Spyne path
  serialises) from templates compiled once from the contract (:data:`~provider.soap.contract.TYPES`).
  The bytes are those Spyne writes: its envelope prefixes (``soap11env``/``soap12env``),
  ``tns`` for the configured namespace and ``ns0`` (declared on the response element)
  for a caller's foreign one, lxml's escaping of text (``&``, ``<``, ``>``, carriage
  return); equivalence is proven by property tests (``tests/unit/test_soap_fastpath.py``).
  A namespace that would need escaping in an attribute is not written here (``None``):
  the Spyne path answers.

Neither class raises for anything a client sends; the router falls back to Spyne on any
exception as well (see :meth:`provider.soap.router.SoapRouter.post`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from lxml import etree

from provider.soap.contract import (
    ARRAY_OF_STRING,
    FIELD_DATA,
    INPUT_VARIABLES,
    INPUTS_PARAMETER,
    OPERATIONS,
    SOAP11_ENV,
    SOAP12_ENV,
    TYPES,
    Member,
    OperationSpec,
)
from provider.soap.versions import SoapVersion

# XML white space (Python's str.strip() strips more than XML does).
_XML_SPACE: Final = " \t\r\n"
# A namespace written verbatim in an attribute: nothing lxml would escape, nothing non-ASCII.
_PLAIN_NAMESPACE: Final = re.compile(r"[\x21-\x7e]+")
_UNSAFE_IN_NAMESPACE: Final = frozenset('&<>"')
_DECLARATION: Final = "<?xml version='1.0' encoding='UTF-8'?>\n"
# The prefixes Spyne's SOAP 1.1 and 1.2 protocols give the envelope namespace.
_ENVELOPE_PREFIX: Final = {SOAP11_ENV: "soap11env", SOAP12_ENV: "soap12env"}
_CONFIGURED_PREFIX: Final = "tns"
_FOREIGN_PREFIX: Final = "ns0"


def _blank(text: str | None) -> bool:
    return text is None or not text.strip(_XML_SPACE)


def plain_namespace(namespace: str) -> bool:
    """Whether ``namespace`` can be written as is in an attribute (the fast path's condition)."""
    return _PLAIN_NAMESPACE.fullmatch(namespace) is not None and not _UNSAFE_IN_NAMESPACE & set(namespace)


def escape_text(text: str) -> str:
    """``text`` escaped as lxml escapes element text (``&``, ``<``, ``>`` and carriage return)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


# --- reading ------------------------------------------------------------------------------


class FastReader:
    """Reads the ``InputVariables`` of an ordinary request in the configured ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self._inputs = f"{{{namespace}}}{INPUTS_PARAMETER}"
        self._variables = f"{{{namespace}}}{INPUT_VARIABLES}"
        self._string = f"{{{namespace}}}string"

    def entries(self, envelope: etree._Element, version: SoapVersion) -> list[str] | None:
        """The ``InputVariables`` strings (``[]`` without any), or ``None`` when not ordinary.

        ``envelope`` is the router's parsed envelope in ``version`` whose body's first
        element is a known operation in the configured namespace.
        """
        if envelope.attrib or len(envelope) != 1 or not _blank(envelope.text):
            return None
        body = envelope[0]
        if body.tag != f"{{{version.envelope}}}Body" or body.attrib or len(body) != 1:
            return None
        if not _blank(body.text) or not _blank(body.tail):
            return None
        operation = body[0]
        if operation.attrib or not _blank(operation.text) or not _blank(operation.tail):
            return None
        inputs = self._only_child(operation, self._inputs)
        if inputs is None or inputs is False:
            return None if inputs is None else []
        variables = self._only_child(inputs, self._variables)
        if variables is None or variables is False:
            return None if variables is None else []
        return self._strings(variables)

    @staticmethod
    def _only_child(parent: etree._Element, tag: str) -> etree._Element | bool | None:
        """The single child ``tag`` of ``parent``; ``False`` for no child; ``None``: not ordinary."""
        count = len(parent)
        if count == 0:
            return False
        child = parent[0]
        if count != 1 or child.tag != tag or child.attrib:
            return None
        if not _blank(child.text) or not _blank(child.tail):
            return None
        return child

    def _strings(self, variables: etree._Element) -> list[str] | None:
        entries: list[str] = []
        tag = self._string
        for element in variables:
            if element.tag != tag or element.attrib or len(element) or not _blank(element.tail):
                return None
            text = element.text
            if text is None:
                return None  # an empty <string/>: Spyne's reading of it is left to Spyne
            entries.append(text)
        return entries


def utf8_request(charset: str | None, envelope: etree._Element) -> bool:
    """Whether the request came as UTF-8 (the Content-Type's charset and the document's)."""
    if charset is not None and charset.strip().lower() not in ("utf-8", "utf8"):
        return False
    encoding = envelope.getroottree().docinfo.encoding
    return encoding is None or encoding.upper() in ("UTF-8", "UTF8")


# --- writing ------------------------------------------------------------------------------

# One member written into ``out`` with the element prefix.
_MemberWriter = Callable[[list[str], str, Any], None]


def _write_boolean(name: str) -> _MemberWriter:
    def write(out: list[str], p: str, value: Any) -> None:
        out.append(f"<{p}:{name}>{'true' if value else 'false'}</{p}:{name}>")

    return write


def _write_string(name: str) -> _MemberWriter:
    def write(out: list[str], p: str, value: Any) -> None:
        if value is not None:
            out.append(f"<{p}:{name}>{escape_text(value)}</{p}:{name}>")

    return write


def _write_strings(name: str) -> _MemberWriter:
    def write(out: list[str], p: str, value: Any) -> None:
        if not value:
            out.append(f"<{p}:{name}/>")
            return
        out.append(f"<{p}:{name}>")
        for item in value:
            out.append(f"<{p}:string>{escape_text(item)}</{p}:string>")
        out.append(f"</{p}:{name}>")

    return write


def _write_fields(name: str) -> _MemberWriter:
    members = _compile(TYPES[FIELD_DATA])

    def write(out: list[str], p: str, value: Any) -> None:
        if not value:
            out.append(f"<{p}:{name}/>")
            return
        out.append(f"<{p}:{name}>")
        for field in value:
            out.append(f"<{p}:{FIELD_DATA}>")
            for member, writer in members:
                writer(out, p, field[member])
            out.append(f"</{p}:{FIELD_DATA}>")
        out.append(f"</{p}:{name}>")

    return write


_BY_KIND: Final[Mapping[str, Callable[[str], _MemberWriter]]] = {
    "boolean": _write_boolean,
    "string": _write_string,
    ARRAY_OF_STRING: _write_strings,
    "ArrayOfExternalCustomFieldData": _write_fields,
}


def _compile(members: tuple[Member, ...]) -> tuple[tuple[str, _MemberWriter], ...]:
    return tuple((m.name, _BY_KIND[m.kind](m.name)) for m in members)


class FastWriter:
    """Writes the answers of the seven operations as Spyne does, from precompiled member writers."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._plain = plain_namespace(namespace)
        self._results = {spec.name: _compile(TYPES[spec.result]) for spec in OPERATIONS}

    def write(
        self, spec: OperationSpec, version: SoapVersion, values: Mapping[str, Any], foreign: str | None
    ) -> bytes | None:
        """The response envelope; ``None`` when a namespace needs escaping (the Spyne path writes it)."""
        env = version.envelope
        e = _ENVELOPE_PREFIX.get(env)
        op = spec.name
        if e is None:
            return None
        if foreign is None:
            if not self._plain:
                return None
            p = _CONFIGURED_PREFIX
            out = [
                f'{_DECLARATION}<{e}:Envelope xmlns:{e}="{env}" xmlns:{p}="{self.namespace}">'
                f"<{e}:Body><{p}:{op}Response><{p}:{op}Result>"
            ]
        else:
            if not plain_namespace(foreign):
                return None
            p = _FOREIGN_PREFIX
            out = [
                f'{_DECLARATION}<{e}:Envelope xmlns:{e}="{env}"><{e}:Body>'
                f'<{p}:{op}Response xmlns:{p}="{foreign}"><{p}:{op}Result>'
            ]
        for member, writer in self._results[op]:
            writer(out, p, values[member])
        out.append(f"</{p}:{op}Result></{p}:{op}Response></{e}:Body></{e}:Envelope>")
        return "".join(out).encode("utf-8")
