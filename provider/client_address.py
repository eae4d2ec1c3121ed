"""Which address a request came from, behind trusted reverse proxies or not.

One implementation for everything that keys, logs or limits by client address (the
SOAP endpoint's ``soap.call`` log line and its wrong-password limiter, the login
throttle's per-address counter, the admin console).

:func:`client_address` takes the WSGI environ and the trusted proxy networks
(``ST_PROVIDER_TRUSTED_PROXIES``):

* the direct peer (``REMOTE_ADDR``) is the client unless it is a trusted proxy;
* when it is, ``X-Forwarded-For`` is read from the right (the hop nearest to us) and
  trusted addresses are skipped: the first untrusted one is the client. Everything left
  of it was written by the client itself and is ignored, so a client cannot choose its
  address by sending the header;
* when every listed address is trusted, the left-most is the client; an entry that is
  not an IP address ends the walk at the last trusted hop (which is then the client);
* a peer that is not an IP address (a Unix socket) gives ``None``: not limited.

Addresses are returned normalised (``ipaddress`` text form; an IPv4-mapped IPv6 address
as IPv4). :func:`address_bucket` groups an IPv6 address by its /64 network, the
smallest block one host is usually given, so one host cannot take a fresh key per
request.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_PROXIES: Final = "127.0.0.1, ::1"
MAX_FORWARDED_ENTRIES: Final = 32  # hops read from X-Forwarded-For; a longer chain ends the walk
_PORT_SUFFIX = re.compile(r"^(?P<host>[0-9.]+):\d{1,5}$")
_BRACKETED = re.compile(r"^\[(?P<host>[0-9A-Fa-f:.]+)\](?::\d{1,5})?$")


def parse_networks(raw: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.5, 192.168.0.0/24 ::1"`` -> networks; raises ValueError naming a bad entry.

    Entries are separated by commas or white space; an address is a one-address network.
    """
    items = re.split(r"[\s,]+", raw) if isinstance(raw, str) else [str(item) for item in raw]
    networks: list[IPNetwork] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address as a proxy may write it (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``), else ``None``."""
    text = text.strip()
    match = _BRACKETED.match(text) or _PORT_SUFFIX.match(text)
    if match:
        text = match.group("host")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, trusted: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


#: Peers and buckets remembered per worker (a few dozen bytes each): a SOAP call's address
#: work is then two dictionary look-ups. Only short strings are remembered.
_REMEMBERED: Final = 1024
_REMEMBER_LENGTH: Final = 64


@functools.lru_cache(maxsize=_REMEMBERED)
def _remembered_peer(text: str) -> IPAddress | None:
    return parse_address(text)


def _peer(text: str) -> IPAddress | None:
    return _remembered_peer(text) if len(text) <= _REMEMBER_LENGTH else parse_address(text)


@functools.lru_cache(maxsize=_REMEMBERED)
def _remembered_peer_text(text: str) -> str | None:
    peer = _remembered_peer(text)
    return None if peer is None else str(peer)


def _peer_text(text: str) -> str | None:
    """``text`` as a normalised address, ``None`` when it is none (remembered when short)."""
    if len(text) <= _REMEMBER_LENGTH:
        return _remembered_peer_text(text)
    peer = parse_address(text)
    return None if peer is None else str(peer)


def client_address(environ: Mapping[str, Any], trusted: tuple[IPNetwork, ...]) -> str | None:
    """The client's address for this request (see the module docstring), or ``None``."""
    remote = str(environ.get("REMOTE_ADDR") or "")
    raw_forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if not trusted or not raw_forwarded:  # the peer is the client: one remembered look-up
        return _peer_text(remote)
    peer = _peer(remote)
    if peer is None:
        return None
    if not is_trusted(peer, trusted):
        return str(peer)
    forwarded = str(raw_forwarded)
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops[-MAX_FORWARDED_ENTRIES:]):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address, trusted):
            break
    return str(client)


def address_bucket(address: str | None) -> str | None:
    """The key an address is counted under: IPv4 as is, IPv6 by its /64; ``None`` when unknown."""
    if not address:
        return None
    if len(address) <= _REMEMBER_LENGTH:
        return _remembered_bucket(address)
    return _bucket(address)


@functools.lru_cache(maxsize=_REMEMBERED)
def _remembered_bucket(address: str) -> str | None:
    return _bucket(address)


def _bucket(address: str) -> str | None:
    parsed = parse_address(address)
    if parsed is None:
        return None
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
