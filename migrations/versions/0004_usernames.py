"""Usernames normalised once (NFKC, case-folded) and the last failure reason of a login.

* ``auth_local_users``: ``username`` is re-written in Unicode NFKC and ``username_key``
  re-computed with :func:`provider.auth.usernames.username_key`, so ``\uff41\uff4c\uff49\uff43\uff45`` and
  ``alice`` are one user. When two existing users now share a key, the oldest keeps
  it; each younger one is disabled and keyed ``conflict:<id>:<key>`` (so
  ``st-provider users remove 'conflict:<id>:<key>'`` can address it) and a warning is
  logged.
* ``auth_throttle`` gains ``last_reason`` and ``last_failure_at`` (read by
  ``st-provider call --explain``). Existing counters keep their keys: the old
  case-folded key equals the new one for every plain spelling, and counters expire
  within the throttle window anyway.

Revision ID: 0004_usernames
Revises: 0003_events
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0004_usernames"
down_revision = "0003_events"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_users = sa.table(
    "auth_local_users",
    sa.column("id", sa.Integer()),
    sa.column("username", sa.String()),
    sa.column("username_key", sa.String()),
    sa.column("enabled", sa.Boolean()),
)


def _display(name: str) -> str:
    # The migration keeps its own copy of the rule so later code changes cannot alter it.
    return unicodedata.normalize("NFKC", name).strip()


def _key(name: str) -> str:
    key = unicodedata.normalize("NFKC", _display(name).casefold()).strip()
    if len(key) > 200:
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def upgrade() -> None:
    with op.batch_alter_table("auth_throttle") as batch:
        batch.add_column(sa.Column("last_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True))

    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_users.c.id, _users.c.username, _users.c.username_key).order_by(_users.c.id)
    ).all()
    wanted: dict[int, tuple[str, str, bool]] = {}
    taken: set[str] = set()
    for user_id, username, _old_key in rows:
        key = _key(username)
        if key in taken:
            log.warning(
                "local user %r (id %d) now has the same name as an older user: disabled and renamed",
                username,
                user_id,
            )
            wanted[user_id] = (_display(username), f"conflict:{user_id}:{key}"[:255], False)
            continue
        taken.add(key)
        wanted[user_id] = (_display(username), key, True)
    # Two passes, so a key that moves from one row to another never trips the unique constraint.
    for user_id in wanted:
        connection.execute(
            sa.update(_users).where(_users.c.id == user_id).values(username_key=f"migrating:{user_id}")
        )
    for user_id, (username, key, keep_enabled) in wanted.items():
        values: dict[str, object] = {"username": username, "username_key": key}
        if not keep_enabled:
            values["enabled"] = False
        connection.execute(sa.update(_users).where(_users.c.id == user_id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("auth_throttle") as batch:
        batch.drop_column("last_failure_at")
        batch.drop_column("last_reason")
    # Usernames stay normalised: the old case-folded keys of NFKC names are the same keys.
    connection = op.get_bind()
    rows = connection.execute(sa.select(_users.c.id, _users.c.username, _users.c.username_key)).all()
    for user_id, username, key in rows:
        if key.startswith("conflict:"):
            continue
        connection.execute(
            sa.update(_users).where(_users.c.id == user_id).values(username_key=username.strip().casefold())
        )
