"""The layering the architecture promises, checked on the source: what each package may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROVIDER = Path(__file__).resolve().parents[2] / "provider"


def imported_modules(package: str) -> set[str]:
    """Every ``provider.*`` module imported anywhere in ``package`` (lazy imports included)."""
    found: set[str] = set()
    for path in (PROVIDER / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("provider.")}


@pytest.mark.parametrize("forbidden", ["auth", "rules", "events", "channels", "web", "server"])
def test_soap_is_protocol_only(forbidden: str) -> None:
    prefix = f"provider.{forbidden}"
    assert [m for m in imported_modules("soap") if m == prefix or m.startswith(prefix + ".")] == []


def test_the_call_layer_knows_neither_metrics_nor_settings() -> None:
    tree = ast.parse((PROVIDER / "calls.py").read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not modules & {"provider.metrics", "provider.settings"}
