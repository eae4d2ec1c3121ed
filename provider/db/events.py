"""SQLAlchemy models for events (filled in by the events capability)."""

from __future__ import annotations
