"""SQLAlchemy models for rules (filled in by the rules capability)."""

from __future__ import annotations
