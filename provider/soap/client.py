"""A small SOAP client for the provider's own contract (``st-provider call``).

Builds the envelope exactly as a .NET proxy does (document/literal wrapped, SOAP 1.1
with a quoted ``SOAPAction`` header or SOAP 1.2 with ``action=`` in the content
type), posts it with a timeout, and reads the ``<Op>Result`` back into a
:class:`CallAnswer`. A SOAP fault raises :class:`SoapFault`; a network error or an
answer that is not SOAP raises :class:`~provider.errors.ProviderError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from lxml import etree

from provider.domain import Operation
from provider.errors import ProviderError
from provider.soap.contract import INPUT_VARIABLES, INPUTS_PARAMETER, SOAP11_ENV, SOAP12_ENV, soap_action
from provider.variables import InputVariables

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


class SoapFault(ProviderError):
    """The provider answered with a SOAP fault."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class CallAnswer:
    """One ``<Op>Result``, as read from the wire (booleans as sent, lists in order)."""

    success: bool
    message: str | None = None
    output_variables: list[str] = field(default_factory=list)
    custom_fields: list[dict[str, object]] = field(default_factory=list)
    user_info_html: str | None = None
    status: int = 200

    @property
    def outputs(self) -> InputVariables:
        """The output variables, parsed (case-insensitive lookups)."""
        return InputVariables.parse(self.output_variables)

    def render(self) -> str:
        """A readable multi-line report (what ``st-provider call`` prints)."""
        lines = [f"Success: {'true' if self.success else 'false'}"]
        if self.message is not None:
            lines.append(f"Message: {self.message}")
        lines.append("OutputVariables:" + ("" if self.output_variables else " (none)"))
        lines.extend(f"  {entry}" for entry in self.output_variables)
        if self.custom_fields:
            lines.append("CustomFieldDataItems:")
            for item in self.custom_fields:
                lines.append(f"  - CustomFieldName: {item.get('CustomFieldName')}")
                for name, value in item.items():
                    if name == "CustomFieldName":
                        continue
                    shown = ", ".join(value) if isinstance(value, list) else value
                    lines.append(f"    {name}: {shown}")
        if self.user_info_html is not None:
            lines.append(f"UserInfoHtml: {self.user_info_html}")
        return "\n".join(lines) + "\n"


def build_envelope(
    operation: Operation, entries: list[str], *, namespace: str, soap12: bool = False
) -> bytes:
    """The request envelope for ``operation`` with ``entries`` as InputVariables."""
    env = SOAP12_ENV if soap12 else SOAP11_ENV
    root = etree.Element(f"{{{env}}}Envelope", nsmap={"soap": env})
    body = etree.SubElement(root, f"{{{env}}}Body")
    op = etree.SubElement(body, f"{{{namespace}}}{operation.value}", nsmap={None: namespace})
    variables = etree.SubElement(
        etree.SubElement(op, f"{{{namespace}}}{INPUTS_PARAMETER}"), f"{{{namespace}}}{INPUT_VARIABLES}"
    )
    for entry in entries:
        etree.SubElement(variables, f"{{{namespace}}}string").text = entry
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def request_headers(operation: Operation, *, namespace: str, soap12: bool = False) -> dict[str, str]:
    """The HTTP headers a .NET proxy sends with the envelope."""
    action = soap_action(namespace, operation.value)
    if soap12:
        return {"Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}
    return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _child(element: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in element if _local(c) == name), None)


def _strings(element: etree._Element | None) -> list[str]:
    return [] if element is None else [c.text or "" for c in element if _local(c) == "string"]


def parse_answer(body: bytes, operation: Operation, *, status: int = 200) -> CallAnswer:
    """Read ``<Op>Result`` from a response; raises SoapFault for a fault."""
    try:
        root = etree.fromstring(body, _SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise ProviderError(f"the answer is not XML (HTTP {status})") from exc
    for element in root.iter():
        if _local(element) == "Fault":
            code = _child(element, "faultcode")
            reason = _child(element, "faultstring")
            if code is None:  # SOAP 1.2
                value = element.find(f"{{{SOAP12_ENV}}}Code/{{{SOAP12_ENV}}}Value")
                text = element.find(f"{{{SOAP12_ENV}}}Reason/{{{SOAP12_ENV}}}Text")
                raise SoapFault(
                    value.text or "" if value is not None else "",
                    text.text or "" if text is not None else "",
                    status,
                )
            raise SoapFault(code.text or "", reason.text or "" if reason is not None else "", status)
    result = next((e for e in root.iter() if _local(e) == f"{operation.value}Result"), None)
    if result is None:
        raise ProviderError(f"the answer has no {operation.value}Result (HTTP {status})")
    success = _child(result, "Success")
    message = _child(result, "Message")
    html = _child(result, "UserInfoHtml")
    fields: list[dict[str, object]] = []
    items = _child(result, "CustomFieldDataItems")
    for item in items if items is not None else ():
        if _local(item) != "ExternalCustomFieldData":
            continue
        data: dict[str, object] = {}
        for member in item:
            name = _local(member)
            data[name] = _strings(member) if name == "ListOptions" else (member.text or "")
        fields.append(data)
    return CallAnswer(
        success=success is not None and (success.text or "").strip().lower() == "true",
        message=None if message is None else message.text or "",
        output_variables=_strings(_child(result, "OutputVariables")),
        custom_fields=fields,
        user_info_html=None if html is None else html.text or "",
        status=status,
    )


def call_operation(
    url: str,
    operation: Operation,
    entries: list[str],
    *,
    namespace: str,
    soap12: bool = False,
    timeout: float = 30.0,
) -> CallAnswer:
    """POST one call to ``url`` and return its result (TLS verified, ``timeout`` seconds)."""
    envelope = build_envelope(operation, entries, namespace=namespace, soap12=soap12)
    headers = request_headers(operation, namespace=namespace, soap12=soap12)
    try:
        response = httpx.post(url, content=envelope, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ProviderError(f"cannot reach {url}: {type(exc).__name__}") from exc
    return parse_answer(response.content, operation, status=response.status_code)
