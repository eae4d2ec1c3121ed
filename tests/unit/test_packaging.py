"""pyproject.toml ships every package and every file beside the code (a plain `pip install .`,
as the container does, must have the console's templates and the partner implementations)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = ROOT / "provider"


def _setuptools() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(data["tool"]["setuptools"])


def test_every_package_is_listed() -> None:
    listed = set(_setuptools()["packages"])  # type: ignore[call-overload]
    in_code = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in PROVIDER.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert in_code - listed == set()


def test_every_data_file_is_in_package_data() -> None:
    package_data: dict[str, list[str]] = _setuptools()["package-data"]  # type: ignore[assignment]
    missing = []
    for path in PROVIDER.rglob("*"):
        if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
            continue
        package_dir = next(p for p in path.parents if (p / "__init__.py").exists())
        package = ".".join(package_dir.relative_to(ROOT).parts)
        relative = path.relative_to(package_dir).as_posix()
        if not any(fnmatch(relative, pattern) for pattern in package_data.get(package, [])):
            missing.append(f"{package}: {relative}")
    assert missing == []
