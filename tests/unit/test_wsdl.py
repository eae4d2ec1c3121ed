"""The WSDL: the checked-in contract, what is served, its address, and that it matches the Spyne types."""

from __future__ import annotations

from pathlib import Path

import pytest
import zeep
from lxml import etree

from provider.app import ProviderApplication, build_application
from provider.calls import Provider
from provider.domain import Operation
from provider.settings import DEFAULT_NAMESPACE, Secret, Settings
from provider.soap.contract import OPERATIONS, TYPES, build_types
from provider.soap.wsdl import (
    DEFAULT_ADDRESS,
    NS_SOAP,
    NS_SOAP12,
    NS_WSDL,
    NS_XSD,
    WsdlDocument,
    service_address,
)
from tests.fixtures.server import wsgi_call
from tests.support import REPO, WEB_SERVICE_PASSWORD

CHECKED_IN = REPO / "wsdl" / "ExternalProvider.wsdl"
NS = {"wsdl": NS_WSDL, "soap": NS_SOAP, "soap12": NS_SOAP12, "s": NS_XSD}


def make_app(tmp_path: Path, **values: str) -> ProviderApplication:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'x.db'}",
            **values,
        }
    )
    return build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))


def addresses(wsdl: bytes) -> list[str]:
    root = etree.fromstring(wsdl)
    return [a.get("location") for a in root.iterfind("wsdl:service/wsdl:port/*", NS)]


def test_the_checked_in_contract_is_what_the_code_renders() -> None:
    assert CHECKED_IN.read_bytes() == WsdlDocument(DEFAULT_NAMESPACE).render(DEFAULT_ADDRESS)


def test_the_served_wsdl_is_the_checked_in_contract_with_the_request_address(tmp_path: Path) -> None:
    result = wsgi_call(make_app(tmp_path), "GET", query="wsdl")
    assert result.status == 200
    assert result.header("content-type") == "text/xml; charset=utf-8"
    address = "http://provider.internal:8080/ExternalProvider.asmx"
    assert addresses(result.body) == [address, address]
    assert result.body.replace(address.encode(), DEFAULT_ADDRESS.encode()) == CHECKED_IN.read_bytes()


@pytest.mark.parametrize("query", ["wsdl", "WSDL", "Wsdl", "wsdl=", "wsdl=1&x=y", "x=1&WSDL"])
def test_wsdl_query_in_any_case(tmp_path: Path, query: str) -> None:
    result = wsgi_call(make_app(tmp_path), "GET", query=query)
    assert result.status == 200 and b"wsdl:definitions" in result.body


def test_head_wsdl_has_headers_only(tmp_path: Path) -> None:
    result = wsgi_call(make_app(tmp_path), "HEAD", query="wsdl")
    assert result.status == 200 and result.body == b"" and int(result.header("content-length") or 0) > 1000


def test_the_address_follows_the_request_host_path_and_scheme(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    asmx = wsgi_call(app, "GET", query="wsdl", headers={"Host": "help.example.com:8443"})
    assert addresses(asmx.body)[0] == "http://help.example.com:8443/ExternalProvider.asmx"
    root = wsgi_call(app, "GET", "/", query="WSDL", headers={"Host": "[::1]:8080"})
    assert addresses(root.body)[0] == "http://[::1]:8080/"


def test_a_forged_host_does_not_leak_into_the_next_wsdl(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    forged = wsgi_call(app, "GET", query="wsdl", headers={"Host": "attacker.example"})
    assert addresses(forged.body)[0] == "http://attacker.example/ExternalProvider.asmx"
    honest = wsgi_call(app, "GET", query="wsdl", headers={"Host": "help.example.com"})
    assert addresses(honest.body) == ["http://help.example.com/ExternalProvider.asmx"] * 2
    assert b"attacker" not in honest.body


@pytest.mark.parametrize("host", ['evil"><x y="', "a b", "host/path", "x" * 300, "é.example"])
def test_an_invalid_host_header_falls_back_to_the_server_name(tmp_path: Path, host: str) -> None:
    result = wsgi_call(make_app(tmp_path), "GET", query="wsdl", headers={"Host": host})
    assert result.status == 200
    etree.fromstring(result.body)  # still well-formed
    assert addresses(result.body)[0] == "http://provider.internal:8080/ExternalProvider.asmx"


@pytest.mark.parametrize(
    ("public_url", "address"),
    [
        ("https://help.example.com/provider", "https://help.example.com/provider/ExternalProvider.asmx"),
        ("https://help.example.com/provider/", "https://help.example.com/provider/ExternalProvider.asmx"),
        ("https://help.example.com/st/Custom.ASMX", "https://help.example.com/st/Custom.ASMX"),
    ],
)
def test_the_public_url_wins_over_the_request(tmp_path: Path, public_url: str, address: str) -> None:
    app = make_app(tmp_path, public_url=public_url)
    result = wsgi_call(app, "GET", query="wsdl", headers={"Host": "attacker.example"})
    assert addresses(result.body) == [address, address]
    assert service_address(public_url) == address


def test_addresses_are_escaped() -> None:
    wsdl = WsdlDocument(DEFAULT_NAMESPACE).render('http://x/a?b=1&c="2"<')
    assert addresses(wsdl)[0] == 'http://x/a?b=1&c="2"<'


def test_two_bindings_seven_operations_asmx_actions() -> None:
    root = etree.parse(str(CHECKED_IN)).getroot()
    names = [spec.name for spec in OPERATIONS]
    for binding, prefix in (("ExternalProviderSoap", "soap"), ("ExternalProviderSoap12", "soap12")):
        (node,) = root.iterfind(f"wsdl:binding[@name='{binding}']", NS)
        assert node.find(f"{prefix}:binding", NS).get("transport") == "http://schemas.xmlsoap.org/soap/http"
        ops = node.findall("wsdl:operation", NS)
        assert [o.get("name") for o in ops] == names
        for op in ops:
            soap_op = op.find(f"{prefix}:operation", NS)
            assert soap_op.get("soapAction") == f"http://tempuri.org/{op.get('name')}"
            assert soap_op.get("style") == "document"
            assert op.find(f"wsdl:input/{prefix}:body", NS).get("use") == "literal"


def test_schema_occurrences_follow_xmlserializer() -> None:
    root = etree.parse(str(CHECKED_IN)).getroot()
    schema = root.find("wsdl:types/s:schema", NS)
    assert schema.get("elementFormDefault") == "qualified"
    for element in schema.iterfind(".//s:element[@type='s:boolean']", NS):
        assert (element.get("minOccurs"), element.get("nillable")) == ("1", None)
    for element in schema.iterfind(".//s:element[@type='s:string']", NS):
        if element.get("maxOccurs") == "1":
            assert element.get("minOccurs") == "0"
    (array,) = schema.iterfind("s:complexType[@name='ArrayOfString']/s:sequence/s:element", NS)
    assert dict(array.attrib) == {
        "minOccurs": "0",
        "maxOccurs": "unbounded",
        "name": "string",
        "nillable": "true",
        "type": "s:string",
    }
    assert not list(schema.iterfind(".//s:element[@type='s:integer']", NS))


def test_every_wsdl_type_matches_the_spyne_class_member_for_member() -> None:
    root = etree.parse(str(CHECKED_IN)).getroot()
    schema = root.find("wsdl:types/s:schema", NS)
    types = build_types("urn:test:spyne-vs-wsdl")
    for name, members in TYPES.items():
        (node,) = schema.iterfind(f"s:complexType[@name='{name}']", NS)
        wsdl_members = [e.get("name") for e in node.iterfind("s:sequence/s:element", NS)]
        assert wsdl_members == [m.name for m in members]
        assert list(types[name]._type_info) == wsdl_members
        assert types[name].get_type_name() == name
    assert types["ArrayOfString"].get_type_name() == "ArrayOfString"


def test_zeep_reads_both_ports_and_all_operations() -> None:
    client = zeep.Client(str(CHECKED_IN))
    service = client.wsdl.services["ExternalProvider"]
    assert sorted(service.ports) == ["ExternalProviderSoap", "ExternalProviderSoap12"]
    for port in service.ports.values():
        assert sorted(port.binding._operations) == sorted(op.value for op in Operation)
    assert type(service.ports["ExternalProviderSoap12"].binding).__name__ == "Soap12Binding"
