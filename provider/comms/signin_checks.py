"""The sign-in code settings checked against the channels and templates (``serve``, ``rules validate``).

With ``ST_PROVIDER_OTP`` on, each configured kind (e-mail, SMS) needs its channel
(``ST_PROVIDER_OTP_CHANNEL_*``) and its template (``ST_PROVIDER_OTP_TEMPLATE_*``, of the
channel's type); a code channel not marked ``category: otp`` may be stopped by opt-outs.
Problems are warnings (a code request then sends nothing and logs
``signin.not_configured``): ``serve`` logs them at start (``signin.misconfigured``),
``rules validate``/``import`` print them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from provider.channels.config import ChannelConfig, ChannelStore
from provider.comms.rows import stored_templates
from provider.comms.templates import MessageTemplate
from provider.db.session import Database
from provider.errors import StorageError
from provider.settings import Settings

log = logging.getLogger("provider.comms.signin")


def otp_problems(
    settings: Settings, channels: Sequence[ChannelConfig], templates: Iterable[MessageTemplate]
) -> list[str]:
    """What is missing or mismatched for sign-in codes among ``channels`` and ``templates``."""
    otp = settings.otp
    if not otp.enabled:
        return []
    by_name = {c.name: c for c in channels}
    template_kinds = {t.name: t.kind for t in templates}
    problems = []
    for kind, channel, template in (
        ("EMAIL", otp.channel_email, otp.template_email),
        ("SMS", otp.channel_sms, otp.template_sms),
    ):
        if channel is None:
            continue
        config = by_name.get(channel)
        if config is None:
            problems.append(f"ST_PROVIDER_OTP_CHANNEL_{kind}: no channel named {channel!r}")
            continue
        if template not in template_kinds:
            problems.append(f"ST_PROVIDER_OTP_TEMPLATE_{kind}: no template named {template!r}")
        elif template_kinds[template] != config.type:
            problems.append(
                f"ST_PROVIDER_OTP_TEMPLATE_{kind}: template {template!r} is written for "
                f"{template_kinds[template]}, channel {channel!r} is {config.type}"
            )
        if _category(config.settings) != "otp":
            problems.append(
                f"ST_PROVIDER_OTP_CHANNEL_{kind}: channel {channel!r} is not 'category: otp', "
                "so opt-outs may stop sign-in codes"
            )
    return problems


def _category(channel_settings: Mapping[str, Any]) -> str:
    return str(channel_settings.get("category") or "transactional").strip().lower()


def warn_at_start(settings: Settings) -> list[str]:
    """Log a warning per problem of the stored channels and templates; never raises."""
    if not settings.otp.enabled:
        return []
    with Database(settings.database_url) as database:
        try:
            with database.session() as session:
                problems = otp_problems(settings, ChannelStore.all(session), stored_templates(session))
        except StorageError:
            return []
    for problem in problems:
        log.warning("sign-in codes: %s", problem, extra={"event": "signin.misconfigured", "problem": problem})
    return problems
