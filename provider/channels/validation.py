"""Channel settings: validation, ``${VAR}`` resolution and conversion to typed values.

The registry validates a rules file's ``channels:`` entries against the type's
:class:`~provider.channels.specs.ChannelSpec` without touching the environment, and
resolves ``${VAR}`` references only when a channel is built. Secrets
(``kind="secret"``) must be ``${VAR}`` references so a rules file (stored in the
database) never holds one.

``${VAR}`` references are allowed only in fields that take them (secrets, URLs and
the fields a channel type declares with ``references=True``), never name one of the
provider's own ``ST_PROVIDER_*`` settings, and must match one of the names or glob
patterns the administrator allows (``ST_PROVIDER_SECRET_VARS``, default ``*``):
otherwise a rules author could send any variable of the process to a URL of their
choosing.

Settings are stored as JSON: :func:`plain_settings` checks their shape and writes
mapping keys as text (``retry_waits: {429: 60}`` is stored as ``{"429": 60}``).
The generic keys (:data:`~provider.channels.policy.GENERIC_KEYS`) are the worker's
(:mod:`provider.channels.policy`); channels ignore them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from provider.channels.policy import GENERIC_KEYS, policy_problems
from provider.channels.specs import ChannelSpec, Field, parse_bool
from provider.errors import ConfigError

#: keys a rules file may carry beside the settings (the loader may or may not strip them)
IGNORED_KEYS = frozenset({"type", "name", "description", "enabled"})

VAR_PATTERN = re.compile(r"\$\{([^}]*)\}")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the provider's own settings: never available to channel settings, whatever is allowed
RESERVED_VAR_PREFIX = "ST_PROVIDER_"
#: ``ST_PROVIDER_SECRET_VARS`` unset: any name not starting with RESERVED_VAR_PREFIX
DEFAULT_SECRET_VARS: tuple[str, ...] = ("*",)


# --- shape ---------------------------------------------------------------------------


def json_data(value: Any) -> Any:
    """A copy of ``value`` in plain JSON containers (``dict``, ``list``), mapping keys as text.

    Any mapping or sequence type is copied (the rules loader's line-tracking ones too);
    keys may be text or whole numbers. Raises ValueError for anything JSON cannot hold.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise ValueError(f"a mapping key of type {type(k).__name__}")
            out[str(k)] = json_data(v)
        return out
    if isinstance(value, list | tuple):
        return [json_data(v) for v in value]
    raise ValueError(f"a value of type {type(value).__name__}")


def plain_settings(settings: Mapping[Any, Any]) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """``settings`` as they are stored (JSON data, mapping keys as text), and shape problems.

    Keys inside a setting may be text or whole numbers (``retry_waits: {429: 60}``);
    values may be text, numbers, booleans, lists and mappings. Each problem is
    ``(key, message)``; a setting with a problem is left out.
    """
    out: dict[str, Any] = {}
    problems: list[tuple[Any, str]] = []
    for key, value in settings.items():
        try:
            if not isinstance(key, str):
                raise ValueError(key)
            out[key] = json_data(value)
        except ValueError:
            problems.append((key, f"setting {key!r} must be text, a number, a boolean, a list or a mapping"))
    return out, problems


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
