"""ASMX-style sample SOAP 1.1 and 1.2 requests and responses, generated from the contract.

Every sample is built from :data:`provider.soap.contract.OPERATIONS` and :data:`~provider.soap.contract.TYPES`
(the same description that drives Spyne and the WSDL), so a new result member shows up here by
itself. Values are placeholders as ASMX prints them (``string``, ``boolean``); the input variables are
``name=value`` strings with the names :mod:`provider.web.operations` documents. The envelopes are
built with lxml, so they are well-formed whatever the configured namespace holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from lxml import etree

from provider.soap.contract import (
    ARRAY_OF_FIELD_DATA,
    ARRAY_OF_STRING,
    FIELD_DATA,
    INPUT_VARIABLES,
    INPUTS_PARAMETER,
    SOAP11_ENV,
    SOAP12_ENV,
    TYPES,
    Member,
    OperationSpec,
    soap_action,
)
from provider.web.operations import Variable

XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
XSD: Final = "http://www.w3.org/2001/XMLSchema"
_DECLARATION: Final = '<?xml version="1.0" encoding="utf-8"?>\n'


@dataclass(frozen=True)
class Sample:
    """One HTTP message as the help page prints it: the start line and headers, then the envelope."""

    head: str
    envelope: str

    @property
    def text(self) -> str:
        return f"{self.head}\n\n{self.envelope}"


@dataclass(frozen=True)
class SoapSamples:
    """The request and response of one operation in one SOAP version."""

    version: str
    request: Sample
    response: Sample


def operation_samples(
    spec: OperationSpec, *, namespace: str, address: str, variables: tuple[Variable, ...]
) -> tuple[SoapSamples, SoapSamples]:
    """The SOAP 1.1 and SOAP 1.2 samples of ``spec`` for a service at ``address`` in ``namespace``."""
    parts = urlsplit(address)
    path, host = parts.path or "/", parts.netloc
    inputs = [f"{v.name}={v.placeholder}" for v in variables]
    samples = []
    for version, envelope_ns, prefix, content_type in (
        ("1.1", SOAP11_ENV, "soap", "text/xml; charset=utf-8"),
        ("1.2", SOAP12_ENV, "soap12", "application/soap+xml; charset=utf-8"),
    ):
        request_head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
        request_head.append("Content-Length: length")
        if version == "1.1":
            request_head.append(f'SOAPAction: "{soap_action(namespace, spec.name)}"')
        response_head = ["HTTP/1.1 200 OK", f"Content-Type: {content_type}", "Content-Length: length"]
        body = _request_body(spec, namespace, inputs)
        answer = _response_body(spec, namespace)
        samples.append(
            SoapSamples(
                version,
                Sample("\n".join(request_head), _envelope(envelope_ns, prefix, body)),
                Sample("\n".join(response_head), _envelope(envelope_ns, prefix, answer)),
            )
        )
    return samples[0], samples[1]


def _envelope(envelope_ns: str, prefix: str, content: etree._Element) -> str:
    root = etree.Element(f"{{{envelope_ns}}}Envelope", nsmap={"xsi": XSI, "xsd": XSD, prefix: envelope_ns})
    etree.SubElement(root, f"{{{envelope_ns}}}Body").append(content)
    text: str = etree.tostring(root, pretty_print=True, encoding="unicode")
    return _DECLARATION + text.rstrip("\n")


def _request_body(spec: OperationSpec, namespace: str, inputs: list[str]) -> etree._Element:
    operation = etree.Element(f"{{{namespace}}}{spec.name}", nsmap={None: namespace})
    parameter = etree.SubElement(operation, f"{{{namespace}}}{INPUTS_PARAMETER}")
    for member in TYPES[spec.inputs]:
        values = inputs if member.name == INPUT_VARIABLES else None
        _member(parameter, member, namespace, values)
    return operation


def _response_body(spec: OperationSpec, namespace: str) -> etree._Element:
    response = etree.Element(f"{{{namespace}}}{spec.response}", nsmap={None: namespace})
    result = etree.SubElement(response, f"{{{namespace}}}{spec.result_element}")
    for member in TYPES[spec.result]:
        _member(result, member, namespace, None)
    return response


def _member(parent: etree._Element, member: Member, namespace: str, strings: list[str] | None) -> None:
    """Append ``member`` with placeholder content (``strings`` for an ArrayOfString, else two ``string``)."""
    element = etree.SubElement(parent, f"{{{namespace}}}{member.name}")
    if member.kind == ARRAY_OF_STRING:
        for value in strings if strings is not None else ["string", "string"]:
            etree.SubElement(element, f"{{{namespace}}}string").text = value
    elif member.kind == ARRAY_OF_FIELD_DATA:
        for _ in range(2):
            item = etree.SubElement(element, f"{{{namespace}}}{FIELD_DATA}")
            for field in TYPES[FIELD_DATA]:
                _member(item, field, namespace, None)
    else:
        element.text = member.kind
