"""Uniphore SMS ``params`` (``additionalParams``) in a rules file: the string form as a mapping.

Pure text handling, used when rules are loaded (:data:`provider.channels.specs.SPECS`
``normalise_notify``): ``ticketNumber={{ args.ticket }}&who=me`` becomes
``{ticketNumber: "{{ args.ticket }}", who: "me"}``, so each rendered value is encoded on
its own and a value such as ``1&evil=x`` cannot add parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

_TEMPLATE_BLOCKS = (("{{", "}}"), ("{%", "%}"), ("{#", "#}"))
PARAMS_FORM_HINT = "write params as a mapping instead, e.g. params: {ticketNumber: '{{ args.ticketNumber }}'}"


def _split_template(text: str) -> list[tuple[str, bool]]:
    """``text`` as pieces ``(text, is_template_block)``; raises ValueError for an unclosed block."""
    pieces: list[tuple[str, bool]] = []
    literal_start = i = 0
    while i < len(text):
        block = next((b for b in _TEMPLATE_BLOCKS if text.startswith(b[0], i)), None)
        if block is None:
            i += 1
            continue
        end = text.find(block[1], i + 2)
        if end < 0:
            raise ValueError(f"{block[0]} without {block[1]}")
        if literal_start < i:
            pieces.append((text[literal_start:i], False))
        pieces.append((text[i : end + 2], True))
        i = literal_start = end + 2
    if literal_start < len(text):
        pieces.append((text[literal_start:], False))
    return pieces


def _split_pairs(pieces: list[tuple[str, bool]]) -> list[list[tuple[str, bool]]]:
    """The pieces between top-level ``&`` (outside template blocks)."""
    pairs: list[list[tuple[str, bool]]] = [[]]
    for piece, is_block in pieces:
        if is_block:
            pairs[-1].append((piece, True))
            continue
        parts = piece.split("&")
        for n, part in enumerate(parts):
            if n:
                pairs.append([])
            if part:
                pairs[-1].append((part, False))
    return [pair for pair in pairs if pair]


def parse_params_template(text: str) -> dict[str, str]:
    """The string form ``a=1&b={{ x }}`` as ``{name: value template}``; raises ValueError.

    Names must be literal text; literal parts are URL-decoded (they are encoded again, one
    value at a time, when sent); template blocks are kept as written.
    """
    result: dict[str, str] = {}
    for pair in _split_pairs(_split_template(text)):
        first, is_block = pair[0]
        if is_block or "=" not in first:
            raise ValueError("each part must be name=value with a literal name")
        raw_name, _, rest = first.partition("=")
        name = unquote_plus(raw_name).strip()
        if not name:
            raise ValueError("a parameter name is empty")
        if name in result:
            raise ValueError(f"parameter {name!r} is given more than once")
        value_pieces = ([(rest, False)] if rest else []) + pair[1:]
        result[name] = "".join(piece if block else unquote_plus(piece) for piece, block in value_pieces)
    return result


def normalise_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A ``notify`` entry's parameters with a string ``params`` turned into the mapping form."""
    out = dict(params)
    value = out.get("params")
    if not isinstance(value, str) or not value.strip():
        return out, []
    try:
        out["params"] = parse_params_template(value)
    except ValueError as exc:
        return out, [f"notify parameter 'params': {exc}; {PARAMS_FORM_HINT}"]
    return out, []
