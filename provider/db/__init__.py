"""Database models and session handling (no business rules here).

Importing this package registers every model on :data:`metadata`.
"""

from __future__ import annotations

from provider.db import auth, comms, events, journal, rules, signin  # noqa: F401  (register the models)
from provider.db.base import Base
from provider.db.session import Database

metadata = Base.metadata

__all__ = ["Base", "Database", "metadata"]
