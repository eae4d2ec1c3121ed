"""Structured logging.

Every log call in the provider passes ``extra={"event": "<dotted.name>", ...}``;
tests assert on those fields, never on message text. ``json`` format writes one
JSON object per line with the fields; ``text`` appends them as ``key=value``.
Spyne's loggers are held at WARNING and its "invalid request" loggers are silenced,
because they write whole raw requests (portal passwords included) at ERROR; the HTTP
clients' loggers (httpx logs query strings, where SmartConnect puts its token) are held
at WARNING by :func:`quiet_http_clients`, which the channels call when they build a client.
Secret-named fields are redacted by :mod:`provider.redact`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from provider.redact import redact_fields

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}

SPYNE_RAW_REQUEST_LOGGERS = (
    "spyne.protocol.soap.soap11.invalid",
    "spyne.protocol.soap.soap12.invalid",
    "spyne.protocol.soap.soap11",
    "spyne.protocol.soap.soap12",
    "spyne.protocol.xml",
    "spyne.server.wsgi",
)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (its ``extra``), with secret-named fields redacted."""
    return redact_fields(
        {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        }
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(record_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = record_fields(record)
        if fields:
            base += " " + " ".join(f"{k}={v!r}" for k, v in fields.items())
        return base


def quiet_spyne() -> None:
    """Hold Spyne's chatty loggers at WARNING and silence the ones that log raw requests.

    Called once per process by :func:`configure_logging`. Spyne logs every fault raised
    in a service at ERROR with a traceback (ours never raise), refused input in
    ``spyne.server`` (its message can quote the input), and the registry's warning that
    a second application (SOAP 1.2) shares a name: those are held at CRITICAL.
    """
    logging.getLogger("spyne").setLevel(logging.WARNING)
    for name in ("spyne.application", "spyne.server", "spyne.util.appreg"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in SPYNE_RAW_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        logger.disabled = True


HTTP_CLIENT_LOGGERS = ("httpx", "httpcore")


def quiet_http_clients() -> None:
    """Hold the HTTP clients' loggers at WARNING whatever the root level is.

    httpx logs every request line at INFO, query strings included (SmartConnect puts its
    token and password there). Called when a channel builds a client; idempotent.
    """
    for name in HTTP_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the root logger once for a process (CLI commands and gunicorn workers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_spyne()
    for noisy in ("httpx", "httpcore", "zeep", "ldap3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
