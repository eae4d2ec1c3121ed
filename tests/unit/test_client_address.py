"""Client address resolution behind trusted proxies (ST_PROVIDER_TRUSTED_PROXIES)."""

from __future__ import annotations

from typing import Any

import pytest

from provider.client_address import address_bucket, client_address, parse_address, parse_networks

PROXIES = parse_networks("10.0.0.5, 192.168.1.0/24 ::1")


def environ(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        env["HTTP_X_FORWARDED_FOR"] = forwarded
    return env


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # The peer is the client unless it is a trusted proxy: its header is ignored.
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        # A trusted proxy without the header: the proxy itself.
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "", "10.0.0.5"),
        # One trusted proxy: the address it appended.
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),
        # What the client sent itself (left of its own address) is ignored.
        ("10.0.0.5", "1.2.3.4, 203.0.113.7", "203.0.113.7"),
        ("10.0.0.5", "10.0.0.5, 203.0.113.7", "203.0.113.7"),
        # Several trusted hops: the right-most untrusted address.
        ("10.0.0.5", "1.2.3.4, 203.0.113.7, 192.168.1.20", "203.0.113.7"),
        ("::1", "203.0.113.7,192.168.1.20 , 10.0.0.5", "203.0.113.7"),
        # Every hop trusted: the left-most.
        ("10.0.0.5", "192.168.1.9, 192.168.1.20", "192.168.1.9"),
        # A hop that is not an address ends the walk at the last trusted hop.
        ("10.0.0.5", "203.0.113.7, unknown, 192.168.1.20", "192.168.1.20"),
        ("10.0.0.5", "garbage", "10.0.0.5"),
        # Ports and brackets as some proxies write them; IPv4-mapped IPv6 as IPv4.
        ("10.0.0.5", "203.0.113.7:4711", "203.0.113.7"),
        ("10.0.0.5", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.5", "203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", None, "203.0.113.7"),
        # A Unix socket peer: unknown.
        ("", "203.0.113.7", None),
        ("unix:/run/st.sock", None, None),
    ],
)
def test_right_most_untrusted_address(peer: str, forwarded: str | None, expected: str | None) -> None:
    assert client_address(environ(peer, forwarded), PROXIES) == expected


def test_no_trusted_proxies_means_the_header_is_never_read() -> None:
    assert client_address(environ("127.0.0.1", "203.0.113.7"), ()) == "127.0.0.1"


def test_a_missing_peer_is_unknown() -> None:
    assert client_address({}, PROXIES) is None


def test_a_long_chain_is_read_only_so_far() -> None:
    chain = ", ".join(["203.0.113.7"] + ["192.168.1.20"] * 100)
    assert client_address(environ("10.0.0.5", chain), PROXIES) == "192.168.1.20"


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks("127.0.0.1,::1 10.0.0.0/8")] == [
        "127.0.0.1/32",
        "::1/128",
        "10.0.0.0/8",
    ]
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks(["192.168.1.7/24"])] == ["192.168.1.0/24"]
    with pytest.raises(ValueError, match="'\\*' is not an IP address"):
        parse_networks("127.0.0.1, *")


def test_parse_address() -> None:
    assert str(parse_address(" 2001:DB8::1 ")) == "2001:db8::1"
    assert parse_address("example.org") is None
    assert parse_address("1.2.3.4:123456") is None
    assert str(parse_address("1.2.3.4:8080")) == "1.2.3.4"


def test_address_bucket_groups_ipv6_by_its_64() -> None:
    assert address_bucket("203.0.113.7") == "203.0.113.7"
    assert address_bucket("2001:db8:1:2::1") == address_bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket(None) is None and address_bucket("") is None and address_bucket("x") is None
