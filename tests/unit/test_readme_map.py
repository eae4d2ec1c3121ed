"""README.md's Development map agrees with the code: it names every module and package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = ROOT / "provider"


def map_sections() -> dict[str, set[str]]:
    """Folder -> the names the map gives for it (``provider/`` for the top level, ``provider/soap`` ...).

    Text in parentheses is description, as is a lead-in ending with ``: ``; ``a and b`` names both.
    """
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Development\n\n```\n", 1)[1].split("```", 1)[0]
    sections: dict[str, list[str]] = {}
    current = ""
    for line in block.splitlines():
        head = re.match(r"^(\s*)(\S+/)\s+(.*)$", line)
        if head and len(line) - len(line.lstrip()) <= 2:
            folder = head.group(2).rstrip("/")
            current = folder if not head.group(1) else f"provider/{folder}"
            sections[current] = [head.group(3)]
        else:
            sections[current].append(line.strip())
    names: dict[str, set[str]] = {}
    for folder, lines in sections.items():
        text = " ".join(lines)
        while re.search(r"\([^()]*\)", text):
            text = re.sub(r"\([^()]*\)", "", text)
        text = text.split(": ", 1)[1] if re.match(r"^[^,]*: ", text) else text
        names[folder] = {w for w in re.split(r"[,\s]+", text) if w and w != "and"}
    return names


def test_every_provider_module_and_package_is_named_and_every_name_exists() -> None:
    sections = map_sections()
    for folder in [PROVIDER, *sorted(p.parent for p in PROVIDER.glob("*/__init__.py"))]:
        key = "provider" if folder == PROVIDER else f"provider/{folder.name}"
        assert key in sections, f"{key}/ is not in the map"
        in_code = {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
        if folder != PROVIDER:  # sub-packages (impl/) and data folders (templates/, static/)
            in_code |= {f"{p.name}/" for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"}
        assert in_code - sections[key] == set(), f"{key}: not in the map"
        assert sections[key] - in_code == set(), f"{key}: named in the map but not in the code"
    top_level = {name.rstrip("/") for name in sections if "/" not in name}
    assert [name for name in top_level if not (ROOT / name).is_dir()] == []
