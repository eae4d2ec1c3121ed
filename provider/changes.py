"""What an import or an admin command changed in the stored rules, channels, templates and
variables: one :class:`Change` per row, audited by :mod:`provider.rules.store`.

A leaf module (imports nothing of the provider), so the row writers of every stored
concept (:mod:`provider.rules.rows`, :mod:`provider.comms.rows`) share it without
importing each other's packages.
"""

from __future__ import annotations

from dataclasses import dataclass

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
ENABLED = "enabled"
DISABLED = "disabled"


@dataclass(frozen=True)
class Change:
    """One rule, channel, template or variable an import or command changed."""

    kind: str  # "rule", "channel", "template" or "variable"
    subject: str
    action: str  # created, updated, deleted, enabled, disabled
