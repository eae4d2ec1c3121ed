"""Channel types by name: validation of their settings and construction.

The rules loader calls :func:`validate_channel_settings` for every entry of a rules
file's ``channels:`` section (and :func:`validate_notify_params` /
:func:`normalise_notify_params` for each ``notify`` entry); the delivery worker calls
:func:`build_channel`, which imports the type's implementation
(:attr:`~provider.channels.specs.ChannelSpec.module`, under ``channels/impl/``) only
then: validating a rules file imports no HTTP, SOAP or SMTP client. The delivery
policy is :func:`provider.channels.policy.channel_policy`. Settings may hold
``${VAR}`` references in the fields that take them (secrets, URLs, declared fields), naming variables ``Settings.secret_vars``
allows and never ``ST_PROVIDER_*``; they are resolved from ``Settings.environment``
only when a channel is built, and never stored resolved.
:func:`channel_missing_variables` names the referenced variables that are not set, so
``rules validate``/``import`` and ``serve`` can warn before the first send fails.
Generic keys (:data:`~provider.channels.policy.GENERIC_KEYS`) are the worker's (retries, pauses, rate limit);
channels ignore them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from provider.channels.base import Channel
from provider.channels.policy import GENERIC_KEYS
from provider.channels.specs import CHANNEL_TYPES, SPECS, ChannelSpec
from provider.channels.validation import (
    DEFAULT_SECRET_VARS,
    IGNORED_KEYS,
    check_settings,
    convert,
    missing_variables,
    resolve,
)
from provider.errors import ConfigError

__all__ = [
    "build_channel",
    "channel_missing_variables",
    "normalise_notify_params",
    "spec",
    "validate_channel_settings",
    "validate_notify_params",
]


def _unknown(type_name: str) -> str:
    return f"unknown channel type {type_name!r} (known: {', '.join(CHANNEL_TYPES)})"


def spec(type_name: str) -> ChannelSpec:
    """The spec of a channel type; raises ConfigError for an unknown type."""
    found = SPECS.get(type_name)
    if found is None:
        raise ConfigError(_unknown(type_name))
    return found


def validate_channel_settings(
    type_name: str, settings: Mapping[str, Any], *, secret_vars: Sequence[str] = DEFAULT_SECRET_VARS
) -> list[str]:
    """Every problem with one channel's settings (empty when valid), without resolving secrets.

    ``secret_vars`` (``Settings.secret_vars``) are the variable names/patterns ``${VAR}`` may name.
    """
    found = SPECS.get(type_name)
    if found is None:
        return [_unknown(type_name)]
    if not isinstance(settings, Mapping):
        return ["channel settings must be a mapping"]
    return check_settings(found, settings, secret_vars)


def channel_missing_variables(
    type_name: str,
    settings: Mapping[str, Any],
    environment: Mapping[str, str],
    *,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> list[str]:
    """The allowed variables one channel's settings reference that ``environment`` lacks.

    Empty for an unknown type or invalid settings (those are validation problems).
    """
    found = SPECS.get(type_name)
    if found is None or not isinstance(settings, Mapping):
        return []
    return missing_variables(found, settings, environment, secret_vars)


def validate_notify_params(type_name: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with the parameter names of a ``notify`` entry for this channel type.

    Only names are checked (values are templates, rendered per event); the channel
    reports missing or invalid rendered values when it sends (final ChannelError).
    ``channel`` (the entry's target) is not a parameter and is ignored.
    """
    found = SPECS.get(type_name)
    if found is None:
        return [_unknown(type_name)]
    if found.notify_params is None:
        return []
    known = set(found.notify_params)
    return [
        f"unknown {type_name} parameter {key!r} (known: {', '.join(found.notify_params)})"
        for key in params
        if key not in known and key != "channel"
    ]


def normalise_notify_params(type_name: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A ``notify`` entry's parameters in the form the channel type wants them stored, and problems.

    Called by the rules loader before templates are compiled: the Uniphore SMS string
    ``params`` (``a={{ x }}&b=2``) becomes a mapping, so each rendered value is encoded.
    """
    found = SPECS.get(type_name)
    if found is None or found.normalise_notify is None:
        return dict(params), []
    return found.normalise_notify(params)


def build_channel(
    name: str,
    type_name: str,
    settings: Mapping[str, Any],
    *,
    environment: Mapping[str, str],
    timeout: float,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> Channel:
    """A ready channel; raises ConfigError for invalid settings or an unset or refused ``${VAR}``.

    ``environment`` is where references are resolved; ``secret_vars`` the names they may
    use. The stored settings pass through the same :func:`validate_channel_settings` the
    loader used (one validation; here with the building process's ``secret_vars``, which
    are the ones that count), then are resolved and converted. Error messages name the
    setting and the variable, never a resolved value.
    """
    found = spec(type_name)
    problems = validate_channel_settings(type_name, settings, secret_vars=secret_vars)
    if problems:
        raise ConfigError(f"channel {name!r}: " + "; ".join(problems))
    own = {k: v for k, v in settings.items() if k not in GENERIC_KEYS and k not in IGNORED_KEYS}
    resolved = {
        key: resolve(value, environment, f"channel {name!r} setting {key!r}", secret_vars)
        for key, value in own.items()
    }
    typed = convert(found, resolved, name)
    for field in found.fields:
        if field.required and (typed.get(field.name) is None or typed.get(field.name) == ""):
            raise ConfigError(f"channel {name!r}: setting {field.name!r} is empty once resolved")
    if found.check is not None:
        problems = found.check(typed)
        if problems:
            raise ConfigError(f"channel {name!r}: " + "; ".join(problems))
    module = importlib.import_module(found.module)
    channel: Channel = module.build(name, typed, timeout)
    return channel
