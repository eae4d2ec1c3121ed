"""Where the files beside the code live: Alembic migrations and WSDLs.

In a source checkout (and an editable install) they are the repository's top-level
``migrations/`` and ``wsdl/``; a built wheel carries the same files inside the package
as ``provider/_migrations`` and ``provider/_wsdl`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _resource_dir(installed: str, checkout: str) -> Path:
    inside = _PACKAGE / installed
    return inside if inside.is_dir() else _PACKAGE.parent / checkout


MIGRATIONS_DIR = _resource_dir("_migrations", "migrations")
WSDL_DIR = _resource_dir("_wsdl", "wsdl")
