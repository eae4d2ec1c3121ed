"""SQLAlchemy models for auth (filled in by the auth capability)."""

from __future__ import annotations
