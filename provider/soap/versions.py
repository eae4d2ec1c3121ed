"""The two SOAP versions: how a request says which it speaks, and how faults are written in it.

SOAP 1.1 faults are HTTP 500 (SOAP 1.1 section 6.2, as ASMX does); SOAP 1.2 sender
faults are 400 and receiver faults 500 (SOAP 1.2 part 2 section 7.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

from provider.soap.contract import SOAP11_ENV, SOAP12_ENV


@dataclass(frozen=True)
class SoapVersion:
    """One SOAP version: its envelope namespace, content type and fault codes."""

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
BY_MEDIA_TYPE: Final = {"text/xml": SOAP11, "application/soap+xml": SOAP12}
BY_ENVELOPE: Final = {SOAP11_ENV: SOAP11, SOAP12_ENV: SOAP12}


def xml_headers(version: SoapVersion, body: bytes) -> list[tuple[str, str]]:
    """The headers of an XML answer in ``version``."""
    return [("Content-Type", version.content_type), ("Content-Length", str(len(body)))]
