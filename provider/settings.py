"""Frozen, typed configuration.

(Over 500 lines on purpose: every setting, its default and its validation in one place, so an
admin's typo is reported together with every other problem at start.)

Built once (by the CLI, from ``ST_PROVIDER_*`` environment variables and an optional
TOML file) and passed to constructors. Nothing else in the provider reads the
environment. Every network setting has a timeout with a safe default.

``Settings.from_mapping`` takes plain names: ``web_service_password`` for
``ST_PROVIDER_WEB_SERVICE_PASSWORD``, ``ldap_url`` for ``ST_PROVIDER_LDAP_URL`` or
``[ldap] url`` in TOML. Unknown names are an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, TypeVar

from provider.client_address import LOOPBACK_PROXIES, IPNetwork, parse_networks
from provider.errors import ConfigError
from provider.secret import Secret as Secret  # noqa: PLC0414 - re-exported: the type of secret settings

ENV_PREFIX = "ST_PROVIDER_"
DEFAULT_DATABASE_URL = "sqlite:///st-provider.db"
DEFAULT_NAMESPACE = "http://tempuri.org/"
ANY_NAMESPACE = "*"
MAX_NAMESPACE_LENGTH = 1024
DEFAULT_USER_FILTER = "(|(uid={username})(sAMAccountName={username})(userPrincipalName={username}))"

#: The shortest Web Service Password accepted (current and previous).
MIN_SERVICE_PASSWORD_LENGTH = 16
#: Placeholder values from deploy/ and the README: copied examples never go live.
KNOWN_PLACEHOLDER_PASSWORDS = frozenset(
    {"change-me-to-a-long-random-value", "change-me", "choose-a-password", "password", "placeholder", "..."}
)
# ... and their kin: "CHANGE-ME-please", "changeme", "replace_me" (a value that starts so).
_PLACEHOLDER_PATTERN = re.compile(r"\s*(change|replace)[-_ ]?me([-_ .]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class LdapSettings:
    """How to reach and search the directory (ST_PROVIDER_LDAP_*)."""

    urls: tuple[str, ...]
    bind_dn: str | None = None
    bind_password: Secret | None = None
    user_base: str = ""
    user_filter: str = DEFAULT_USER_FILTER
    # Direct bind without a service account: a DN template such as
    # "uid={username},ou=people,dc=example,dc=org"; else UPN / DOMAIN\\user as typed.
    user_dn_template: str | None = None
    default_domain: str | None = None
    start_tls: bool = False
    ca_file: str | None = None
    timeout: int = 5
    email_attribute: str = "mail"
    display_name_attribute: str = "displayName"
    group_base: str | None = None
    require_group: str | None = None
    nested_groups: bool = True
    cache_ttl: float = 60.0


@dataclass(frozen=True)
class ThrottleSettings:
    """Brute-force protection for Authenticate (counted in the database)."""

    max_failures: int = 5
    window_seconds: int = 300
    cooldown_seconds: int = 900
    # SmarterTrack is the only caller, so the address seen is SmarterTrack's own: counting per
    # address would let 50 bad portal logins lock every user out. 0 (the default) turns it off;
    # set it when other clients can reach the provider directly.
    max_failures_per_address: int = 0


@dataclass(frozen=True)
class PasswordLimitSettings:
    """Wrong Web Service Passwords per client address (ST_PROVIDER_AUTHPW_*), counted per process.

    ``max_failures`` wrong passwords within ``window_seconds`` block the address for
    ``cooldown_seconds`` (HTTP 429); 0 turns it off. ``max_addresses`` bounds the table.
    """

    max_failures: int = 20
    window_seconds: int = 60
    cooldown_seconds: int = 60
    max_addresses: int = 10_000


@dataclass(frozen=True)
class WorkerSettings:
    """The event delivery worker."""

    poll_interval: float = 1.0
    batch_size: int = 20
    lease_seconds: int = 120
    max_attempts: int = 8
    max_age_seconds: int = 86_400
    http_timeout: float = 10.0
    # Exponential backoff (with jitter) for timeouts, connection errors and statuses
    # without a configured wait: the first wait is about retry_backoff seconds,
    # doubling per attempt up to retry_backoff_max.
    retry_backoff: float = 10.0
    retry_backoff_max: float = 3600.0
    # Sends one worker has in flight at once (threads); a channel may allow fewer.
    concurrency: int = 16
    # Wake idle workers when deliveries are stored (PostgreSQL LISTEN/NOTIFY, SQLite
    # change polling), instead of only every poll_interval.
    wakeups: bool = True


@dataclass(frozen=True)
class RetentionSettings:
    """How long stored records are kept (enforced by the delivery worker and ``db purge``).

    ``journal_days``/``journal_max_rows``: the call journal (older rows, and the oldest
    rows beyond the maximum, are removed); ``events_days``: events with their deliveries
    and attempts (unfinished deliveries are kept); ``audit_days``: the rules audit.
    """

    journal_days: int = 7
    journal_max_rows: int = 1_000_000
    events_days: int = 90
    audit_days: int = 365


@dataclass(frozen=True)
class ConsoleSettings:
    """The admin console under ``/admin/`` (ST_PROVIDER_CONSOLE, ..._ADMIN_GROUP, ...).

    ``session_secret`` signs the session cookies; without one, ``st-provider serve``
    generates one per start (shared by its workers, logged) so sessions do not survive a
    restart and another host cannot read them: set it when several hosts serve.
    """

    enabled: bool = True
    admin_group: str | None = None
    viewer_group: str | None = None
    session_secret: Secret | None = None
    session_idle_minutes: int = 30


@dataclass(frozen=True)
class OtpSettings:
    """One-time sign-in codes for portal customers (ST_PROVIDER_OTP, ST_PROVIDER_OTP_*).

    Off by default: then ``/signin-code`` answers 404 and Authenticate accepts no code.
    ``channel_email``/``channel_sms`` name the channels a code goes through (``None``: no
    codes for that kind of address), ``template_email``/``template_sms`` the templates
    rendered with ``code``, ``minutes`` and ``user``. At most ``max_per_address`` requests
    per address and ``max_per_client`` per client address are honoured per ``window_seconds``.
    """

    enabled: bool = False
    length: int = 6
    alphabet: str = "numeric"
    ttl_seconds: int = 300
    channel_email: str | None = None
    channel_sms: str | None = None
    template_email: str = "otp-email"
    template_sms: str = "otp-sms"
    max_per_address: int = 3
    max_per_client: int = 20
    window_seconds: int = 900


@dataclass(frozen=True)
class Settings:
    """Everything the service needs, validated."""

    web_service_password: Secret | None = None
    # During a password rotation both are accepted (see deploy/README.md).
    previous_web_service_password: Secret | None = None
    database_url: str = DEFAULT_DATABASE_URL
    namespace: str = DEFAULT_NAMESPACE
    # Other operation namespaces answered (in the caller's namespace); "*" is any.
    accept_namespaces: tuple[str, ...] = (ANY_NAMESPACE,)
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    # A request (headers and body) not received whole within this many seconds gets 408.
    request_read_seconds: float = 10.0
    bind: str = "127.0.0.1:8080"
    workers: int = 2
    threads: int = 4
    gunicorn_config: str | None = None
    auth: str = "local"  # "ldap", "local" or "none"
    ldap: LdapSettings | None = None
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    password_limit: PasswordLimitSettings = field(default_factory=PasswordLimitSettings)
    # Reverse proxies whose X-Forwarded-For is believed (see provider/client_address.py).
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=lambda: parse_networks(LOOPBACK_PROXIES))
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    rules_refresh_seconds: float = 2.0
    # Limits of one call's rule evaluation (see provider/rules/limits.py).
    rules_max_output: int = 65_536
    rules_deadline_ms: int = 200
    event_dedup_seconds: int = 600
    # The call journal (ST_PROVIDER_JOURNAL): every SOAP call recorded, secrets removed.
    journal: bool = True
    # ST_PROVIDER_SOAP_FAST_PATH: ordinary calls answered without Spyne (provider/soap/fastpath.py).
    soap_fast_path: bool = True
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    log_format: str = "text"  # "text" or "json"
    log_level: str = "INFO"
    # Where ``${VAR}`` references in channel settings are resolved, at use time.
    # The CLI passes the process environment; nothing else reads it.
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Names or glob patterns of the variables channel settings may reference
    # (ST_PROVIDER_SECRET_VARS); ST_PROVIDER_* names are refused whatever this says.
    secret_vars: tuple[str, ...] = ("*",)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    # Read-only global variables (``vars.name`` in rules and templates) from
    # ST_PROVIDER_VAR_<NAME>: name (lower-cased) -> value.
    read_only_vars: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    otp: OtpSettings = field(default_factory=OtpSettings)

    def require_password(self) -> Secret:
        """The Web Service Password; raises ConfigError when it is not configured."""
        if not self.web_service_password:
            raise ConfigError(
                "ST_PROVIDER_WEB_SERVICE_PASSWORD is required: set it to the Web Service Password "
                "entered in SmarterTrack (Settings > External Providers)"
            )
        return self.web_service_password

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], environment: Mapping[str, str] | None = None
    ) -> Settings:
        """Build and validate settings from plain names (see module docstring).

        ``environment`` resolves ``${VAR}`` in channel settings. Raises ConfigError
        naming every invalid or unknown setting.
        """
        return replace(_Builder(values).build(), environment=MappingProxyType(dict(environment or {})))


T = TypeVar("T")

#: Settings named ``var_<name>`` (ST_PROVIDER_VAR_<NAME>) are read-only global variables.
READ_ONLY_VAR_PREFIX = "var_"
_VARIABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _whole_number(accept: Callable[[int], bool], problem: str) -> Callable[[Any], int]:
    """A parser of whole numbers that raises ValueError(``problem``) for one ``accept`` refuses."""

    def parse(raw: Any) -> int:
        value = int(str(raw).strip())
        if not accept(value):
            raise ValueError(problem)
        return value

    return parse


_parse_positive_int = _whole_number(lambda value: value > 0, "must be a positive whole number")
_parse_non_negative_int = _whole_number(
    lambda value: value >= 0, "must be 0 (off) or a positive whole number"
)


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    return _whole_number(lambda value: low <= value <= high, f"must be a whole number from {low} to {high}")


def _parse_positive_float(raw: Any) -> float:
    value = float(str(raw).strip())
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _parse_secret(raw: Any) -> Secret | None:
    text = str(raw)
    return Secret(text) if text else None


def _parse_service_password(raw: Any) -> Secret | None:
    """A Web Service Password: unset, or at least 16 characters and not an example placeholder.

    The messages never repeat the value.
    """
    secret = _parse_secret(raw)
    if secret is None:
        return None
    text = secret.reveal()
    if text.strip().lower() in KNOWN_PLACEHOLDER_PASSWORDS or _PLACEHOLDER_PATTERN.match(text):
        raise ValueError(
            "is a placeholder from the examples: set it to the long random Web Service Password "
            "entered in SmarterTrack (e.g. from `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    if len(text) < MIN_SERVICE_PASSWORD_LENGTH:
        raise ValueError(
            f"is too short: use at least {MIN_SERVICE_PASSWORD_LENGTH} characters (a long random value, "
            "e.g. from `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    return secret


MIN_SESSION_SECRET_LENGTH = 32


def _parse_session_secret(raw: Any) -> Secret | None:
    """The console's cookie-signing key: unset, or at least 32 characters (the value never repeated)."""
    secret = _parse_secret(raw)
    if secret is not None and len(secret.reveal()) < MIN_SESSION_SECRET_LENGTH:
        raise ValueError(
            f"is too short: use at least {MIN_SESSION_SECRET_LENGTH} random characters "
            "(e.g. from `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return secret


def _list_items(raw: Any) -> tuple[str, ...]:
    """The non-empty items of a TOML list or of a comma- or space-separated text, stripped, in order."""
    items = raw if isinstance(raw, list | tuple) else re.split(r"[\s,]+", str(raw))
    return tuple(text for text in (str(item).strip() for item in items) if text)


def _parse_urls(raw: Any) -> tuple[str, ...]:
    urls = _list_items(raw)
    for url in urls:
        if not re.match(r"^ldaps?://", url, re.IGNORECASE):
            raise ValueError(f"{url!r} is not an ldap:// or ldaps:// URL")
    return urls


def _parse_networks(raw: Any) -> tuple[IPNetwork, ...]:
    return parse_networks(raw if isinstance(raw, list | tuple) else str(raw))


def _parse_namespaces(raw: Any) -> tuple[str, ...]:
    """``"* "`` / ``"urn:a, http://b/"`` / a list -> the namespaces; empty: none besides the configured one."""
    namespaces = tuple(dict.fromkeys(_list_items(raw)))
    for namespace in namespaces:
        if len(namespace) > MAX_NAMESPACE_LENGTH:
            raise ValueError(f"a namespace is longer than {MAX_NAMESPACE_LENGTH} characters")
        if "*" in namespace and namespace != ANY_NAMESPACE:
            raise ValueError(f"{namespace!r}: '*' stands alone (any namespace); patterns are not supported")
    return namespaces


_VAR_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]!-]+$")


def _parse_secret_vars(raw: Any) -> tuple[str, ...]:
    """Names/glob patterns from a comma- or space-separated text (or a TOML list)."""
    patterns = tuple(dict.fromkeys(_list_items(raw)))
    if not patterns:
        raise ValueError(
            "list at least one variable name or pattern "
            "(leave it unset for the default: any name not starting with ST_PROVIDER_)"
        )
    for pattern in patterns:
        if not _VAR_PATTERN.match(pattern):
            raise ValueError(
                f"{pattern!r} is not a variable name or glob pattern (letters, digits, _ * ? [ ])"
            )
    return patterns


def _otp_length(raw: Any) -> int:
    value = _parse_positive_int(raw)
    if value not in (4, 6, 8):
        raise ValueError("must be 4, 6 or 8")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _str(raw: Any) -> str:
    return str(raw)


def _opt_str(raw: Any) -> str | None:
    text = str(raw).strip()
    return text or None


class _Builder:
    """Reads the mapping once, collecting every problem before raising."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {str(k).strip().lower(): v for k, v in values.items()}
        self.used: set[str] = set()
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[Any], T], default: T) -> T:
        self.used.add(name)
        if name not in self.values:
            return default
        raw = self.values[name]
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{ENV_PREFIX}{name.upper()}: {exc}")
            return default

    def _section(self, prefix: str, cls: type[Any], parsers: Mapping[str, Callable[[Any], Any]]) -> Any:
        kwargs = {}
        for f in fields(cls):
            if f.name in parsers:
                kwargs[f.name] = self.get(f"{prefix}{f.name}", parsers[f.name], f.default)
        return cls(**kwargs)

    def build(self) -> Settings:
        ldap = self._ldap()
        auth_default = "ldap" if ldap is not None else "local"
        auth = self.get("auth", _choice("ldap", "local", "none"), auth_default)
        if auth == "ldap" and ldap is None:
            self.problems.append("ST_PROVIDER_AUTH=ldap needs ST_PROVIDER_LDAP_URL")
        namespace = self.get("namespace", _str, DEFAULT_NAMESPACE).strip()
        if not namespace:
            self.problems.append("ST_PROVIDER_NAMESPACE: must not be empty")
        settings = Settings(
            web_service_password=self.get("web_service_password", _parse_service_password, None),
            previous_web_service_password=self.get(
                "previous_web_service_password", _parse_service_password, None
            ),
            database_url=self.get("database_url", _str, DEFAULT_DATABASE_URL).strip(),
            namespace=namespace or DEFAULT_NAMESPACE,
            accept_namespaces=self.get("accept_namespaces", _parse_namespaces, (ANY_NAMESPACE,)),
            public_url=self.get("public_url", _opt_str, None),
            max_body_bytes=self.get("max_body_bytes", _parse_positive_int, 1_048_576),
            request_read_seconds=self.get("request_read_seconds", _parse_positive_float, 10.0),
            bind=self.get("bind", _str, "127.0.0.1:8080"),
            workers=self.get("workers", _parse_positive_int, 2),
            threads=self.get("threads", _parse_positive_int, 4),
            gunicorn_config=self.get("gunicorn_config", _opt_str, None),
            auth=auth,
            ldap=ldap,
            throttle=self._section(
                "throttle_",
                ThrottleSettings,
                {
                    "max_failures": _parse_positive_int,
                    "window_seconds": _parse_positive_int,
                    "cooldown_seconds": _parse_positive_int,
                    "max_failures_per_address": _parse_non_negative_int,
                },
            ),
            password_limit=self._section(
                "authpw_",
                PasswordLimitSettings,
                {
                    "max_failures": _parse_non_negative_int,
                    "window_seconds": _parse_positive_int,
                    "cooldown_seconds": _parse_positive_int,
                    "max_addresses": _parse_positive_int,
                },
            ),
            trusted_proxies=self.get("trusted_proxies", _parse_networks, parse_networks(LOOPBACK_PROXIES)),
            worker=self._section(
                "worker_",
                WorkerSettings,
                {
                    "poll_interval": _parse_positive_float,
                    "batch_size": _parse_positive_int,
                    "lease_seconds": _parse_positive_int,
                    "max_attempts": _parse_positive_int,
                    "max_age_seconds": _parse_positive_int,
                    "http_timeout": _parse_positive_float,
                    "retry_backoff": _parse_positive_float,
                    "retry_backoff_max": _parse_positive_float,
                    "concurrency": _int_between(1, 256),
                    "wakeups": _parse_bool,
                },
            ),
            rules_refresh_seconds=self.get("rules_refresh_seconds", _parse_positive_float, 2.0),
            rules_max_output=self.get("rules_max_output", _int_between(1_024, 16 * 1_048_576), 65_536),
            rules_deadline_ms=self.get("rules_deadline_ms", _int_between(10, 60_000), 200),
            event_dedup_seconds=self.get("event_dedup_seconds", _parse_positive_int, 600),
            journal=self.get("journal", _parse_bool, True),
            soap_fast_path=self.get("soap_fast_path", _parse_bool, True),
            retention=self._section(
                "",
                RetentionSettings,
                {
                    "journal_days": _parse_positive_int,
                    "journal_max_rows": _parse_positive_int,
                    "events_days": _parse_positive_int,
                    "audit_days": _parse_positive_int,
                },
            ),
            log_format=self.get("log_format", _choice("text", "json"), "text"),
            log_level=self.get("log_level", _choice("debug", "info", "warning", "error"), "info").upper(),
            secret_vars=self.get("secret_vars", _parse_secret_vars, ("*",)),
            console=self._console(),
            read_only_vars=self._read_only_vars(),
            otp=self._otp(),
        )
        unknown = sorted(set(self.values) - self.used - {"config"})
        for name in unknown:
            self.problems.append(f"{ENV_PREFIX}{name.upper()}: unknown setting")
        if self.problems:
            raise ConfigError("invalid configuration: " + "; ".join(self.problems))
        return settings

    def _console(self) -> ConsoleSettings:
        console = ConsoleSettings(
            enabled=self.get("console", _parse_bool, True),
            admin_group=self.get("admin_group", _opt_str, None),
            viewer_group=self.get("viewer_group", _opt_str, None),
            session_secret=self.get("session_secret", _parse_session_secret, None),
            session_idle_minutes=self.get("session_idle_minutes", _int_between(1, 24 * 60), 30),
        )
        return console

    def _otp(self) -> OtpSettings:
        otp = OtpSettings(
            enabled=self.get("otp", _parse_bool, False),
            length=self.get("otp_length", _otp_length, 6),
            alphabet=self.get("otp_alphabet", _choice("numeric", "alphanumeric"), "numeric"),
            ttl_seconds=self.get("otp_ttl_seconds", _int_between(30, 86_400), 300),
            channel_email=self.get("otp_channel_email", _opt_str, None),
            channel_sms=self.get("otp_channel_sms", _opt_str, None),
            template_email=self.get("otp_template_email", _str, "otp-email").strip() or "otp-email",
            template_sms=self.get("otp_template_sms", _str, "otp-sms").strip() or "otp-sms",
            max_per_address=self.get("otp_max_per_address", _parse_positive_int, 3),
            max_per_client=self.get("otp_max_per_client", _parse_positive_int, 20),
            window_seconds=self.get("otp_window_seconds", _parse_positive_int, 900),
        )
        if otp.enabled and not (otp.channel_email or otp.channel_sms):
            self.problems.append(
                "ST_PROVIDER_OTP is on but neither ST_PROVIDER_OTP_CHANNEL_EMAIL nor "
                "ST_PROVIDER_OTP_CHANNEL_SMS names a channel to send codes through"
            )
        return otp

    def _read_only_vars(self) -> Mapping[str, str]:
        """``var_<name>`` settings (ST_PROVIDER_VAR_<NAME>): the read-only global variables."""
        found: dict[str, str] = {}
        for key in sorted(k for k in self.values if k.startswith(READ_ONLY_VAR_PREFIX)):
            self.used.add(key)
            name = key[len(READ_ONLY_VAR_PREFIX) :]
            if not _VARIABLE_NAME.match(name):
                self.problems.append(
                    f"{ENV_PREFIX}{key.upper()}: a variable name is letters, digits and _ "
                    "(not starting with a digit)"
                )
                continue
            found[name] = str(self.values[key])
        return MappingProxyType(found)

    def _ldap(self) -> LdapSettings | None:
        no_urls: tuple[str, ...] = ()
        urls = self.get("ldap_url", _parse_urls, no_urls)
        names = [n for n in self.values if n.startswith("ldap_")]
        if "ldap_url" not in self.values:
            if names:
                self.used.update(names)
                self.problems.append("ST_PROVIDER_LDAP_* settings given without ST_PROVIDER_LDAP_URL")
            return None
        defaults = LdapSettings(urls=urls)
        settings = LdapSettings(
            urls=urls,
            bind_dn=self.get("ldap_bind_dn", _opt_str, None),
            bind_password=self.get("ldap_bind_password", _parse_secret, None),
            user_base=self.get("ldap_user_base", _str, defaults.user_base),
            user_filter=self.get("ldap_user_filter", _str, defaults.user_filter),
            user_dn_template=self.get("ldap_user_dn_template", _opt_str, None),
            default_domain=self.get("ldap_default_domain", _opt_str, None),
            start_tls=self.get("ldap_start_tls", _parse_bool, False),
            ca_file=self.get("ldap_ca_file", _opt_str, None),
            timeout=self.get("ldap_timeout", _parse_positive_int, defaults.timeout),
            email_attribute=self.get("ldap_email_attribute", _str, defaults.email_attribute),
            display_name_attribute=self.get(
                "ldap_display_name_attribute", _str, defaults.display_name_attribute
            ),
            group_base=self.get("ldap_group_base", _opt_str, None),
            require_group=self.get("ldap_require_group", _opt_str, None),
            nested_groups=self.get("ldap_nested_groups", _parse_bool, True),
            cache_ttl=self.get("ldap_cache_ttl", lambda r: float(str(r)), defaults.cache_ttl),
        )
        if "{username}" not in settings.user_filter:
            self.problems.append("ST_PROVIDER_LDAP_USER_FILTER: must contain {username}")
        if settings.bind_dn and not settings.bind_password:
            self.problems.append("ST_PROVIDER_LDAP_BIND_DN needs ST_PROVIDER_LDAP_BIND_PASSWORD")
        return settings if urls else None
