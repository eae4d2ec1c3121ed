"""The channel types as data: their settings, notify parameters and delivery defaults.

One :class:`ChannelSpec` per type in :data:`SPECS` says which settings the type takes
(and which of them may hold ``${VAR}`` references), the notify parameters it reads,
its retry waits and rate limit, cross-field checks and how a ``notify`` entry is
normalised when rules are loaded. Everything here is pure: no HTTP, SOAP or SMTP
client is imported (a SOAP web worker validates rules files with it). The
implementation of a type is the module named by :attr:`ChannelSpec.module`, imported
only when a channel is built (:func:`provider.channels.registry.build_channel`).

Adding a partner: one entry here, one module under ``channels/impl/`` with a
``build(name, settings, timeout)`` function, its emulator and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from provider.channels.sms_params import normalise_params

MessageKind = Literal["sms", "email", "webhook", "docgen"]
MESSAGE_KINDS: tuple[MessageKind, ...] = ("sms", "email", "webhook", "docgen")
Kind = Literal["str", "url", "secret", "int", "float", "bool", "mapping", "choice"]

#: Generic HTTP channels: pause on 429/503 when the partner gives no Retry-After.
HTTP_RETRY_WAITS: Mapping[int, float] = MappingProxyType({429: 60.0, 503: 120.0})
#: headers a webhook may not set (the HTTP client does)
WEBHOOK_RESERVED_HEADERS = frozenset({"content-length", "host", "transfer-encoding"})
DEFAULT_SIGNATURE_HEADER = "X-Signature-256"


@dataclass(frozen=True)
class Field:
    """One setting of a channel type."""

    name: str
    kind: Kind = "str"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    #: whether the value may hold ``${VAR}`` references; ``None``: only secrets and URLs
    references: bool | None = None

    @property
    def takes_references(self) -> bool:
        """Whether ``${VAR}`` references are allowed in this field."""
        if self.references is not None:
            return self.references
        return self.kind in ("secret", "url")


@dataclass(frozen=True)
class ChannelSpec:
    """A channel type: its settings, the notify parameters it reads, its defaults.

    ``module`` implements the type (a ``build(name, settings, timeout)`` function that
    receives validated, resolved and converted settings). ``retry_waits`` maps an HTTP
    status to the seconds to wait before the next attempt (a larger ``Retry-After``
    wins); ``rate_limit`` is ``(calls, seconds)`` or ``None``. ``check`` adds cross-field
    problems; ``normalise_notify`` rewrites a ``notify`` entry's parameters when rules
    are loaded (before templates are compiled), returning them with any problems.
    ``message_kind`` is what reports filter on (``sms``, ``email``, ``webhook``,
    ``docgen``); ``recipient`` names the notify parameter holding the address the
    suppression list is checked against, and its kind (``("to", "sms")``), or ``None``
    when the type has no such address.
    """

    type_name: str
    module: str
    fields: tuple[Field, ...]
    notify_params: tuple[str, ...] | None  # None: any parameter name is accepted
    retry_waits: Mapping[int, float] = field(default_factory=lambda: HTTP_RETRY_WAITS)
    rate_limit: tuple[int, float] | None = None
    check: Callable[[Mapping[str, Any]], list[str]] | None = None
    normalise_notify: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[str]]] | None = None
    message_kind: MessageKind = "webhook"
    recipient: tuple[str, Literal["sms", "email"]] | None = None

    def field_named(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


def parse_bool(value: Any) -> bool:
    """``True``/``False`` from a boolean or ``1/0``, ``true/false``, ``yes/no``, ``on/off``; raises ValueError."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


# --- cross-field checks ------------------------------------------------------------


def _uniphore_check(settings: Mapping[str, Any]) -> list[str]:
    if settings.get("soap_url") and str(settings.get("transport", "rest")).lower() != "soap":
        return ["setting 'soap_url' is only used with transport: soap"]
    return []


def _webhook_check(settings: Mapping[str, Any]) -> list[str]:
    headers = settings.get("headers") or {}
    bad = [str(k) for k in headers if str(k).lower() in WEBHOOK_RESERVED_HEADERS]
    return [f"setting 'headers': {name!r} is set by the HTTP client" for name in bad]


def _email_check(settings: Mapping[str, Any]) -> list[str]:
    problems = []
    if bool(settings.get("username")) != bool(settings.get("password")):
        problems.append("settings 'username' and 'password' go together")
    try:
        tls = parse_bool(settings.get("starttls", True)) or parse_bool(settings.get("ssl", False))
        insecure_ok = parse_bool(settings.get("allow_insecure_auth", False))
    except ValueError:
        return problems  # reported per field, or resolved from the environment later
    if settings.get("username") and not tls and not insecure_ok:
        problems.append(
            "credentials without TLS: set starttls: true or ssl: true "
            "(or allow_insecure_auth: true on a trusted network)"
        )
    return problems


# --- the types ------------------------------------------------------------------------

_TLS_AND_TIMEOUT = (Field("ca_file"), Field("proxy", "url"), Field("timeout", "float"))

UNIPHORE_SMS = ChannelSpec(
    type_name="uniphore-sms",
    module="provider.channels.impl.uniphore_sms",
    fields=(
        Field("base_url", "url", required=True),
        Field("account_id", required=True),
        Field("tenant_id"),
        Field("application_key", "secret", required=True),
        Field("environment"),
        Field("transport", "choice", default="rest", choices=("rest", "soap")),
        Field("soap_url", "url"),
        Field("wsdl"),
        *_TLS_AND_TIMEOUT,
    ),
    notify_params=("campaign", "to", "from", "params", "jp_token", "send_from_master_account"),
    check=_uniphore_check,
    normalise_notify=normalise_params,
    message_kind="sms",
    recipient=("to", "sms"),
)

#: SmartCOMM's documented guidance: 100 calls per 60 s per connection; wait 5 s after
#: a 500, 60 s after a 429, 120 s after a 503 (a larger Retry-After wins).
SMARTCOMM = ChannelSpec(
    type_name="smartcomm",
    module="provider.channels.impl.smartcomm",
    fields=(
        Field("base_url", "url", required=True),
        Field("token_url", "url", required=True),
        Field("client_id", required=True, references=True),
        Field("client_secret", "secret", required=True),
        Field("batch_config_res_id", "int"),
        Field("project_id", "int"),
        Field("scope"),
        Field("client_auth", "choice", default="basic", choices=("basic", "body")),
        Field("include_document_data", "bool", default=True),
        *_TLS_AND_TIMEOUT,
    ),
    notify_params=(
        "data",
        "data_type",
        "batch_config_res_id",
        "project_id",
        "transaction_range",
        "properties",
        "include_document_data",
    ),
    retry_waits=MappingProxyType({500: 5.0, 429: 60.0, 503: 120.0}),
    rate_limit=(100, 60.0),
    message_kind="docgen",
)

SMARTCONNECT = ChannelSpec(
    type_name="smartconnect",
    module="provider.channels.impl.smartconnect",
    fields=(
        Field("api_url", "url", required=True),
        Field("customer_id", required=True),
        Field("email", required=True, references=True),
        Field("password", "secret", required=True),
        Field("hash_password", "bool", default=False),
        Field("revalidate_after", "float", default=300.0),
        *_TLS_AND_TIMEOUT,
    ),
    notify_params=("map_key", "variables", "xml"),
    message_kind="docgen",
)

WEBHOOK = ChannelSpec(
    type_name="webhook",
    module="provider.channels.impl.webhook",
    fields=(
        Field("url", "url", required=True),
        Field("headers", "mapping", references=True),  # e.g. Authorization: Bearer ${TOKEN}
        Field("secret", "secret"),
        Field("signature_header", default=DEFAULT_SIGNATURE_HEADER),
        Field("method", "choice", default="post", choices=("post", "put")),
        *_TLS_AND_TIMEOUT,
    ),
    notify_params=None,  # without 'body', every parameter is part of the JSON body
    check=_webhook_check,
)

EMAIL = ChannelSpec(
    type_name="email",
    module="provider.channels.impl.email",
    fields=(
        Field("host", required=True, references=True),
        Field("port", "int"),
        Field("starttls", "bool", default=True),
        Field("ssl", "bool", default=False),
        Field("username", references=True),
        Field("password", "secret"),
        Field("allow_insecure_auth", "bool", default=False),
        Field("from", required=True),
        Field("ca_file"),
        Field("local_hostname"),
        Field("timeout", "float"),
    ),
    notify_params=("to", "cc", "bcc", "reply_to", "subject", "text", "html"),
    retry_waits=MappingProxyType({}),
    check=_email_check,
    message_kind="email",
    recipient=("to", "email"),
)

SPECS: Mapping[str, ChannelSpec] = MappingProxyType(
    {s.type_name: s for s in (UNIPHORE_SMS, SMARTCOMM, SMARTCONNECT, WEBHOOK, EMAIL)}
)
CHANNEL_TYPES: tuple[str, ...] = tuple(SPECS)
