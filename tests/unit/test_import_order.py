"""Every provider module imports when it is the first one imported (no circular import
that only works in a lucky order): each is imported alone in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = ROOT / "provider"


def provider_modules() -> list[str]:
    """The dotted name of every module and package under ``provider/``."""
    names = []
    for path in sorted(PROVIDER.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_alone(module: str) -> tuple[str, int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return module, done.returncode, done.stderr.strip().splitlines()[-1:][0] if done.stderr.strip() else ""


def test_every_provider_module_imports_first() -> None:
    modules = provider_modules()
    assert "provider.comms.rows" in modules and "provider.rules.store" in modules
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(import_alone, modules))
    failures = {module: error for module, code, error in results if code != 0}
    assert failures == {}
