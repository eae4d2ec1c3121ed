"""CSV of report rows: what ``deliveries list --format csv`` prints and the console downloads.

One function, :func:`csv_text`, for both front ends. Each dataclass field is a column
(header: the field names); dates are UTC ISO 8601 with a ``Z``, mappings and lists JSON.

Spreadsheet formula injection: a text cell that starts with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return is written with a leading ``'`` so a spreadsheet shows it as
text instead of running it, except a plain number (``+15550100``, ``-3``, ``2.5``), which
no spreadsheet can run as a formula (E.164 phone numbers stay as they are).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def utc_text(value: datetime, timespec: str = "auto") -> str:
    """``value`` as ISO 8601 in UTC with a ``Z`` (a naive value is taken as UTC)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def json_ready(value: Any) -> Any:
    """``value`` for ``json.dumps``: dates as UTC text (:func:`utc_text`), tuples as lists, keys as text."""
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def defuse(text: str) -> str:
    """``text`` safe to open in a spreadsheet (see the module docstring)."""
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_cell(value: Any) -> str:
    """One CSV cell: empty for ``None``, dates in UTC, mappings and lists as JSON, text defused."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, Mapping | list):
        return defuse(json.dumps(json_ready(value), ensure_ascii=False, sort_keys=True))
    return defuse(str(value))


def csv_text(records: Sequence[Any]) -> str:
    """Dataclass ``records`` as CSV text (a header row of field names, then one row each);
    empty text when there are none."""
    if not records:
        return ""
    buffer = io.StringIO()
    names = [f.name for f in dataclasses.fields(records[0])]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for record in records:
        writer.writerow([csv_cell(getattr(record, n)) for n in names])
    return buffer.getvalue()
