"""Channel settings: their schema, validation, ``${VAR}`` resolution and delivery policy.

Every channel module declares a :class:`ChannelSpec` (its settings, the notify
parameters it understands, its delivery defaults and how to build it). The
registry validates a rules file's ``channels:`` entries against those specs
without touching the environment, and resolves ``${VAR}`` references only when a
channel is built. Secrets (``kind="secret"``) must be ``${VAR}`` references so a
rules file (stored in the database) never holds one.

``${VAR}`` references are allowed only in fields that take them (secrets, URLs and
the fields a channel type declares with ``references=True``), never name one of the
provider's own ``ST_PROVIDER_*`` settings, and must match one of the names or glob
patterns the administrator allows (``ST_PROVIDER_SECRET_VARS``, default ``*``):
otherwise a rules author could send any variable of the process to a URL of their
choosing.

The generic keys (:data:`GENERIC_KEYS`) belong to the worker; :func:`parse_policy`
turns them, over the channel type's :class:`ChannelDefaults`, into a
:class:`ChannelPolicy`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from provider.errors import ConfigError

if TYPE_CHECKING:
    from provider.channels.base import Channel

GENERIC_KEYS = frozenset({"retry_waits", "max_attempts", "max_age", "rate_limit"})
#: keys a rules file may carry beside the settings (the loader may or may not strip them)
IGNORED_KEYS = frozenset({"type", "name", "description", "enabled"})

VAR_PATTERN = re.compile(r"\$\{([^}]*)\}")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the provider's own settings: never available to channel settings, whatever is allowed
RESERVED_VAR_PREFIX = "ST_PROVIDER_"
#: ``ST_PROVIDER_SECRET_VARS`` unset: any name not starting with RESERVED_VAR_PREFIX
DEFAULT_SECRET_VARS: tuple[str, ...] = ("*",)

Kind = Literal["str", "url", "secret", "int", "float", "bool", "mapping", "choice"]


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
class ChannelDefaults:
    """What the worker applies to a channel type unless its settings say otherwise.

    ``rate_limit`` is ``(calls, seconds)`` or ``None`` (no limit); ``retry_waits``
    maps an HTTP status to the seconds to wait before the next attempt (a larger
    ``Retry-After`` from the partner wins). Statuses not listed use the worker's
    exponential backoff with jitter.
    """

    rate_limit: tuple[int, float] | None = None
    retry_waits: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ChannelPolicy:
    """The delivery policy of one configured channel (defaults merged with its generic keys).

    ``max_attempts`` / ``max_age`` (seconds) are ``None`` when the channel does not
    set them: the worker then uses its own settings (8 attempts, 24 h).
    """

    rate_limit: tuple[int, float] | None
    retry_waits: Mapping[int, float]
    max_attempts: int | None = None
    max_age: float | None = None


# Generic HTTP channels: pause on 429/503 when the partner gives no Retry-After.
HTTP_DEFAULTS = ChannelDefaults(retry_waits=MappingProxyType({429: 60.0, 503: 120.0}))


@dataclass(frozen=True)
class ChannelSpec:
    """A channel type: its settings, the notify parameters it reads, and its factory.

    ``build(name, settings, timeout)`` receives settings that are validated, resolved
    and converted to their kinds (see :func:`convert`); it may raise ConfigError.
    ``check`` adds cross-field problems (on unresolved settings). ``normalise_notify``
    rewrites a ``notify`` entry's parameters when rules are loaded (before templates are
    compiled), returning them with any problems.
    """

    type_name: str
    fields: tuple[Field, ...]
    notify_params: tuple[str, ...] | None  # None: any parameter name is accepted
    build: Callable[[str, Mapping[str, Any], float], Channel]
    defaults: ChannelDefaults = HTTP_DEFAULTS
    check: Callable[[Mapping[str, Any]], list[str]] | None = None
    normalise_notify: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[str]]] | None = None

    def field_named(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


# --- ${VAR} references -----------------------------------------------------------


def references(value: str) -> list[str]:
    """The variable names referenced by ``value`` (``${NAME}``)."""
    return VAR_PATTERN.findall(value)


def variable_allowed(name: str, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS) -> bool:
    """Whether channel settings may reference the environment variable ``name``.

    Never an ``ST_PROVIDER_*`` name; otherwise a name matching one of ``secret_vars``
    (exact names or :mod:`fnmatch` patterns, case-sensitive).
    """
    if name.upper().startswith(RESERVED_VAR_PREFIX):
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in secret_vars)


def variable_problem(var: str, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS) -> str | None:
    """Why ``${var}`` may not be used in channel settings, or ``None`` when it may."""
    if not VAR_NAME.match(var):
        return f"${{{var}}} is not a valid environment variable name"
    if var.upper().startswith(RESERVED_VAR_PREFIX):
        return f"${{{var}}} names a setting of the provider itself ({RESERVED_VAR_PREFIX}*), never available to channels"
    if not variable_allowed(var, secret_vars):
        return f"${{{var}}} is not allowed by ST_PROVIDER_SECRET_VARS ({', '.join(secret_vars)})"
    return None


def allowed_environment(
    environment: Mapping[str, str], secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
) -> Mapping[str, str]:
    """The part of ``environment`` channel settings may reference (see :func:`variable_allowed`)."""
    return MappingProxyType({k: v for k, v in environment.items() if variable_allowed(k, secret_vars)})


def resolve(
    value: Any, environment: Mapping[str, str], where: str, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
) -> Any:
    """``value`` with every ``${VAR}`` replaced from ``environment`` (recursively in mappings/lists).

    Raises ConfigError naming the variable (never a value) when it is unset or not allowed
    (:func:`variable_problem`).
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            var = match.group(1)
            problem = variable_problem(var, secret_vars)
            if problem is not None:
                raise ConfigError(f"{where}: {problem}")
            if var not in environment:
                raise ConfigError(f"{where}: environment variable {var} is not set")
            return environment[var]

        return VAR_PATTERN.sub(substitute, value)
    if isinstance(value, Mapping):
        return {str(k): resolve(v, environment, f"{where}.{k}", secret_vars) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, environment, f"{where}[{i}]", secret_vars) for i, v in enumerate(value)]
    return value


def _walk_references(value: Any) -> list[str]:
    if isinstance(value, str):
        return references(value)
    if isinstance(value, Mapping):
        return [var for item in value.values() for var in _walk_references(item)]
    if isinstance(value, list | tuple):
        return [var for item in value for var in _walk_references(item)]
    return []


def missing_variables(
    spec: ChannelSpec,
    settings: Mapping[str, Any],
    environment: Mapping[str, str],
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> list[str]:
    """Allowed variables the channel's own settings reference that ``environment`` lacks (in order).

    Only the settings the channel resolves are looked at; references that are not allowed
    at all are validation problems (:func:`check_settings`), not listed here.
    """
    missing: list[str] = []
    for f in spec.fields:
        if not f.takes_references:
            continue
        for var in _walk_references(settings.get(f.name)):
            if variable_problem(var, secret_vars) is None and var not in environment and var not in missing:
                missing.append(var)
    return missing


# --- validation (no environment) ---------------------------------------------------


def _check_refs(f: Field, value: str, key: str, secret_vars: Sequence[str]) -> list[str]:
    found = references(value)
    if found and not f.takes_references:
        return [
            f"setting {key!r} may not hold ${{VAR}} references: only secrets, URLs and "
            "settings documented as taking them do"
        ]
    return [f"setting {key!r}: {problem}" for var in found if (problem := variable_problem(var, secret_vars))]


def _check_value(f: Field, value: Any, secret_vars: Sequence[str]) -> list[str]:
    key = f.name
    if f.kind == "mapping":
        if not isinstance(value, Mapping):
            return [f"setting {key!r} must be a mapping of names to strings"]
        problems = []
        for k, v in value.items():
            if isinstance(v, Mapping | list):
                problems.append(f"setting {key!r}: {k!r} must be a single value")
            elif isinstance(v, str):
                problems.extend(_check_refs(f, v, f"{key}.{k}", secret_vars))
        return problems
    if f.kind == "secret":
        if not isinstance(value, str) or not VAR_PATTERN.fullmatch(value.strip()):
            return [
                f"setting {key!r} must be a ${{VAR}} reference: secrets come from the environment, "
                "never from the rules file"
            ]
        return _check_refs(f, value, key, secret_vars)
    if isinstance(value, Mapping | list):
        return [f"setting {key!r} must be a single value"]
    if isinstance(value, str) and references(value):
        return _check_refs(f, value, key, secret_vars)  # the value itself is checked after resolution
    try:
        convert_value(f, value)
    except ConfigError as exc:
        return [str(exc)]
    return []


def check_settings(
    spec: ChannelSpec, settings: Mapping[str, Any], secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
) -> list[str]:
    """Every problem with ``settings`` for ``spec`` (unknown, missing, mistyped keys, references).

    ``secret_vars`` are the variable names/patterns ``${VAR}`` may name (see :func:`variable_problem`).
    """
    problems: list[str] = []
    known = {f.name for f in spec.fields}
    for key in settings:
        if key in known or key in GENERIC_KEYS or key in IGNORED_KEYS:
            continue
        problems.append(f"unknown setting {key!r} (known: {', '.join(sorted(known | GENERIC_KEYS))})")
    for f in spec.fields:
        if f.name not in settings or settings[f.name] is None or settings[f.name] == "":
            if f.required:
                problems.append(f"setting {f.name!r} is required")
            continue
        problems.extend(_check_value(f, settings[f.name], secret_vars))
    problems.extend(policy_problems(settings))
    if spec.check is not None and not problems:
        problems.extend(spec.check(settings))
    return problems


# --- conversion (after resolution) ------------------------------------------------


def convert_value(f: Field, value: Any) -> Any:
    """``value`` as the field's kind; raises ConfigError (without echoing secrets)."""
    key = f.name
    try:
        if f.kind in ("str", "secret"):
            return str(value)
        if f.kind == "url":
            text = str(value).strip()
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
            return text.rstrip("/")
        if f.kind == "int":
            if isinstance(value, bool):
                raise ValueError("must be a whole number")
            return int(str(value).strip())
        if f.kind == "float":
            number = float(str(value).strip())
            if not number > 0:
                raise ValueError("must be a positive number")
            return number
        if f.kind == "bool":
            return parse_bool(value)
        if f.kind == "choice":
            text = str(value).strip().lower()
            if text not in f.choices:
                raise ValueError(f"must be one of {', '.join(f.choices)}")
            return text
        if f.kind == "mapping":
            return {str(k): str(v) for k, v in dict(value).items()}
    except (ValueError, TypeError) as exc:
        shown = "" if f.kind == "secret" else f" ({str(value)[:80]!r})"
        raise ConfigError(f"setting {key!r}{shown}: {exc}") from exc
    raise ConfigError(f"setting {key!r}: unsupported kind {f.kind}")  # pragma: no cover


def convert(spec: ChannelSpec, resolved: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Resolved settings as typed values, defaults filled in, generic keys dropped."""
    out: dict[str, Any] = {}
    for f in spec.fields:
        value = resolved.get(f.name)
        if value is None or value == "":
            out[f.name] = f.default
            continue
        try:
            out[f.name] = convert_value(f, value)
        except ConfigError as exc:
            raise ConfigError(f"channel {name!r}: {exc}") from exc
    return out


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context (system CAs, or ``ca_file`` when given).

    Contexts are shared (loading the system CAs costs tens of milliseconds); a changed
    ``ca_file`` (by modification time) gets a new one. Callers must not modify them.
    """
    try:
        stamp = os.stat(ca_file).st_mtime_ns if ca_file else 0
        return _cached_context(ca_file, stamp)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"setting 'ca_file': cannot load CA certificates from {ca_file!r}") from exc


@functools.lru_cache(maxsize=32)
def _cached_context(ca_file: str | None, stamp: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


# --- delivery policy (generic keys) -----------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"24h"``, ``"2d"``; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30, '90s', '30m', '24h'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be a duration such as 30, '90s', '30m', '24h'")
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _UNIT[unit]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _parse_rate_limit(value: Any) -> tuple[int, float]:
    """``{calls: 100, per: 60}``, ``[100, 60]`` or ``"100/60s"`` -> ``(100, 60.0)``."""
    if isinstance(value, Mapping):
        calls = value.get("calls")
        per = value.get("per", value.get("seconds"))
        extra = set(value) - {"calls", "per", "seconds"}
        if extra or calls is None or per is None:
            raise ValueError("must be {calls: N, per: SECONDS}")
    elif isinstance(value, list | tuple) and len(value) == 2:
        calls, per = value
    elif isinstance(value, str) and "/" in value:
        calls, per = value.split("/", 1)
    else:
        raise ValueError("must be {calls: N, per: SECONDS}, [N, SECONDS] or 'N/SECONDS'")
    if isinstance(calls, bool):
        raise ValueError("calls must be a positive whole number")
    count = int(str(calls).strip())
    seconds = parse_duration(per)
    if count <= 0 or seconds <= 0:
        raise ValueError("calls and period must be positive")
    return count, seconds


def _parse_rate_limit_setting(value: Any) -> tuple[int, float] | None:
    """Like :func:`_parse_rate_limit`, but ``false``/``off``/``none`` mean no limit."""
    if value is False or (isinstance(value, str) and value.strip().lower() in {"off", "none"}):
        return None
    return _parse_rate_limit(value)


def _parse_retry_waits(value: Any) -> dict[int, float]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of HTTP status to seconds, e.g. {429: 60, 503: 120}")
    waits: dict[int, float] = {}
    for status, wait in value.items():
        code = int(str(status).strip())
        if not 100 <= code <= 599:
            raise ValueError(f"{status!r} is not an HTTP status")
        waits[code] = parse_duration(wait)
    return waits


def _parse_max_attempts(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a positive whole number")
    number = int(str(value).strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _parse_max_age(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


_POLICY_PARSERS: dict[str, Callable[[Any], Any]] = {
    "rate_limit": _parse_rate_limit_setting,
    "retry_waits": _parse_retry_waits,
    "max_attempts": _parse_max_attempts,
    "max_age": _parse_max_age,
}


def policy_problems(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the generic keys of ``settings``."""
    problems = []
    for key, parse in _POLICY_PARSERS.items():
        if key in settings and settings[key] is not None:
            try:
                parse(settings[key])
            except (ValueError, TypeError) as exc:
                problems.append(f"setting {key!r}: {exc}")
    return problems


def parse_policy(defaults: ChannelDefaults, settings: Mapping[str, Any]) -> ChannelPolicy:
    """The channel's policy: ``defaults`` overridden by its generic keys; raises ConfigError.

    ``retry_waits`` are merged status by status; ``rate_limit: null`` keeps the default,
    ``rate_limit: off`` (or ``false``/``none``) removes it.
    """
    problems = policy_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    rate_limit = defaults.rate_limit
    if settings.get("rate_limit") is not None:
        rate_limit = _parse_rate_limit_setting(settings["rate_limit"])
    waits = dict(defaults.retry_waits)
    if settings.get("retry_waits") is not None:
        waits.update(_parse_retry_waits(settings["retry_waits"]))
    max_attempts = settings.get("max_attempts")
    max_age = settings.get("max_age")
    return ChannelPolicy(
        rate_limit=rate_limit,
        retry_waits=MappingProxyType(waits),
        max_attempts=_parse_max_attempts(max_attempts) if max_attempts is not None else None,
        max_age=_parse_max_age(max_age) if max_age is not None else None,
    )
