"""The WSDL of the provider, as ASMX writes it: one SOAP 1.1 and one SOAP 1.2 binding.

Rendered from the declarative contract in :mod:`provider.soap.contract`, so the
served WSDL, the Spyne types and the checked-in ``wsdl/ExternalProvider.wsdl`` cannot
drift apart (a test compares the last two). Spyne's own WSDL is never served: it has
one binding, wrong ``soapAction`` values and, worse, is cached per worker with the
address taken from the first request's ``Host`` header.

:class:`WsdlDocument` renders the document once per namespace; :meth:`WsdlDocument.render`
then only substitutes the service address, so a WSDL request costs a string replace
and nothing is cached across requests.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import quoteattr

from lxml import etree

from provider.soap.contract import (
    ARRAY_OF_FIELD_DATA,
    ARRAY_OF_STRING,
    ENDPOINT_PATH,
    FIELD_DATA,
    INPUTS_PARAMETER,
    OPERATIONS,
    SERVICE_NAME,
    TYPES,
    Kind,
    soap_action,
)

NS_WSDL: Final = "http://schemas.xmlsoap.org/wsdl/"
NS_SOAP: Final = "http://schemas.xmlsoap.org/wsdl/soap/"
NS_SOAP12: Final = "http://schemas.xmlsoap.org/wsdl/soap12/"
NS_XSD: Final = "http://www.w3.org/2001/XMLSchema"
HTTP_TRANSPORT: Final = "http://schemas.xmlsoap.org/soap/http"

PORT_SOAP11: Final = f"{SERVICE_NAME}Soap"
PORT_SOAP12: Final = f"{SERVICE_NAME}Soap12"
DEFAULT_ADDRESS: Final = "http://localhost/ExternalProvider.asmx"

_TNS: Final = "tns:"
_ADDRESS_SENTINEL: Final = "urn:st-provider:service-address"
_ARRAY_ITEMS: Final = {ARRAY_OF_STRING: ("string", "s:string"), ARRAY_OF_FIELD_DATA: (FIELD_DATA, None)}


def _w(tag: str) -> str:
    return f"{{{NS_WSDL}}}{tag}"


def _s(tag: str) -> str:
    return f"{{{NS_XSD}}}{tag}"


def _sub(parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, tag, attrib)


class WsdlDocument:
    """The WSDL for one target namespace; :meth:`render` fills in the address."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        body = etree.tostring(_build(namespace), encoding="utf-8", pretty_print=True)
        text = b'<?xml version="1.0" encoding="utf-8"?>\n' + body
        # Exactly two occurrences (the two ports' addresses): three parts.
        self._parts = text.split(quoteattr(_ADDRESS_SENTINEL).encode("utf-8"))
        if len(self._parts) != 3:
            raise AssertionError("the WSDL template must hold exactly two service addresses")

    def render(self, address: str = DEFAULT_ADDRESS) -> bytes:
        """The WSDL with ``address`` as the location of both ports (escaped here)."""
        return quoteattr(address).encode("utf-8").join(self._parts)


def _build(namespace: str) -> etree._Element:
    """The WSDL's ``definitions`` element for ``namespace``, in the order ASMX writes it."""
    root = etree.Element(
        _w("definitions"),
        nsmap={
            "soap": NS_SOAP,
            "soap12": NS_SOAP12,
            "s": NS_XSD,
            "tns": namespace,
            "wsdl": NS_WSDL,
        },
        targetNamespace=namespace,
    )
    _SchemaWriter(root, namespace).write()
    _write_messages(root)
    _write_port_type(root)
    _write_bindings(root, namespace)
    _write_service(root)
    return root


class _SchemaWriter:
    """Writes the ``types`` schema: each operation's wrapper elements and the types they use."""

    def __init__(self, root: etree._Element, namespace: str) -> None:
        types = _sub(root, _w("types"))
        self._schema = _sub(types, _s("schema"), elementFormDefault="qualified", targetNamespace=namespace)
        self._written: set[str] = set()

    def write(self) -> None:
        for spec in OPERATIONS:
            self._element(spec.name, INPUTS_PARAMETER, spec.inputs)
            self._complex_type(spec.inputs)
            self._element(spec.response, spec.result_element, spec.result)
            self._complex_type(spec.result)

    def _element(self, name: str, member: str, type_name: str) -> None:
        wrapper = _sub(self._schema, _s("element"), name=name)
        sequence = _sub(_sub(wrapper, _s("complexType")), _s("sequence"))
        _sub(sequence, _s("element"), minOccurs="0", maxOccurs="1", name=member, type=_TNS + type_name)

    def _complex_type(self, name: str) -> None:
        # XmlSchemaExporter writes each type once, where it is first referenced.
        if name in self._written:
            return
        self._written.add(name)
        node = _sub(self._schema, _s("complexType"), name=name)
        sequence = _sub(node, _s("sequence"))
        if name in _ARRAY_ITEMS:
            self._array_items(sequence, name)
            return
        referenced: list[str] = []
        for member in TYPES[name]:
            occurs, xsd = _member_schema(member.kind)
            _sub(sequence, _s("element"), minOccurs=occurs, maxOccurs="1", name=member.name, type=xsd)
            if member.kind in (ARRAY_OF_STRING, ARRAY_OF_FIELD_DATA):
                referenced.append(member.kind)
        for ref in referenced:
            self._complex_type(ref)

    def _array_items(self, sequence: etree._Element, name: str) -> None:
        item, xsd_type = _ARRAY_ITEMS[name]
        _sub(
            sequence,
            _s("element"),
            minOccurs="0",
            maxOccurs="unbounded",
            name=item,
            nillable="true",
            type=xsd_type or _TNS + item,
        )
        if xsd_type is None:
            self._complex_type(item)


def _write_messages(root: etree._Element) -> None:
    for spec in OPERATIONS:
        for suffix, name in (("SoapIn", spec.name), ("SoapOut", spec.response)):
            message = _sub(root, _w("message"), name=spec.name + suffix)
            _sub(message, _w("part"), name="parameters", element=_TNS + name)


def _write_port_type(root: etree._Element) -> None:
    port_type = _sub(root, _w("portType"), name=PORT_SOAP11)
    for spec in OPERATIONS:
        op = _sub(port_type, _w("operation"), name=spec.name)
        _sub(op, _w("input"), message=f"{_TNS}{spec.name}SoapIn")
        _sub(op, _w("output"), message=f"{_TNS}{spec.name}SoapOut")


def _write_bindings(root: etree._Element, namespace: str) -> None:
    for binding_name, soap_ns in ((PORT_SOAP11, NS_SOAP), (PORT_SOAP12, NS_SOAP12)):
        binding = _sub(root, _w("binding"), name=binding_name, type=_TNS + PORT_SOAP11)
        _sub(binding, f"{{{soap_ns}}}binding", transport=HTTP_TRANSPORT)
        for spec in OPERATIONS:
            op = _sub(binding, _w("operation"), name=spec.name)
            _sub(
                op,
                f"{{{soap_ns}}}operation",
                soapAction=soap_action(namespace, spec.name),
                style="document",
            )
            for direction in ("input", "output"):
                _sub(_sub(op, _w(direction)), f"{{{soap_ns}}}body", use="literal")


def _write_service(root: etree._Element) -> None:
    service = _sub(root, _w("service"), name=SERVICE_NAME)
    for port_name, soap_ns in ((PORT_SOAP11, NS_SOAP), (PORT_SOAP12, NS_SOAP12)):
        port = _sub(service, _w("port"), name=port_name, binding=_TNS + port_name)
        _sub(port, f"{{{soap_ns}}}address", location=_ADDRESS_SENTINEL)


def _member_schema(kind: Kind) -> tuple[str, str]:
    """(minOccurs, type) of a member, as XmlSerializer declares it."""
    if kind == "boolean":
        return "1", "s:boolean"
    if kind == "string":
        return "0", "s:string"
    return "0", f"tns:{kind}"


def service_address(public_url: str) -> str:
    """The endpoint URL for a configured public URL.

    A URL whose path already ends in ``.asmx`` is used as is; otherwise
    ``/ExternalProvider.asmx`` is appended to it.
    """
    url = public_url.strip()
    if url.lower().endswith(".asmx"):
        return url
    return url.rstrip("/") + ENDPOINT_PATH
