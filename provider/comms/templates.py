"""Message templates and global variables: what a rules file's ``templates:`` and ``variables:`` say.

A :class:`MessageTemplate` is written for one channel type (``kind``, a name from
:data:`provider.channels.specs.SPECS`) and holds that type's ``notify`` parameters as
Jinja2 templates (:data:`TEMPLATE_PARAMS`); a ``notify`` entry naming it with
``template: NAME`` gets those parameters with its own keys merged over them. In an
``email`` template the ``html`` is autoescaped (:data:`HTML_PARAMS`).

Global variables are ``vars.name`` in every condition and template (names ignore
case): the editable ones of the ``variables:`` section, and the read-only ones of the
environment (``ST_PROVIDER_VAR_<NAME>``, in ``Settings.read_only_vars``); an editable
variable may not have the name of a read-only one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provider.channels.specs import SPECS

#: The parameters a template of each kind may hold (the partner's message, not its address).
TEMPLATE_PARAMS: Mapping[str, tuple[str, ...]] = {
    "uniphore-sms": ("campaign", "params"),
    "email": ("subject", "html", "text"),
    "webhook": ("body",),
    "smartcomm": ("data",),
    "smartconnect": ("map_key", "variables", "xml"),
}

#: Template parameters rendered with HTML autoescaping, per kind.
HTML_PARAMS: Mapping[str, tuple[str, ...]] = {"email": ("html",)}

#: The name of the global variables in conditions and templates.
VARS_NAME = "vars"

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def template_params(kind: str) -> tuple[str, ...] | None:
    """The parameters a template of ``kind`` may hold; ``None`` when ``kind`` is not a channel type."""
    if kind not in SPECS:
        return None
    spec = SPECS[kind]
    return TEMPLATE_PARAMS.get(kind, spec.notify_params or ())


@dataclass(frozen=True)
class MessageTemplate:
    """One ``templates:`` entry (``params`` as written: string leaves are Jinja2 templates)."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    tags: tuple[str, ...] = ()
    line: int | None = field(default=None, compare=False)

    @property
    def html_params(self) -> tuple[str, ...]:
        return HTML_PARAMS.get(self.kind, ())

    def to_mapping(self) -> dict[str, Any]:
        """The template as a rules file writes it (under its name)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.description is not None:
            out["description"] = self.description
        if self.tags:
            out["tags"] = list(self.tags)
        out.update(self.params)
        return out


def global_variables(read_only: Mapping[str, str], editable: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``vars``: the read-only variables, then the editable ones (names as given)."""
    return {**dict(read_only), **dict(editable)}
