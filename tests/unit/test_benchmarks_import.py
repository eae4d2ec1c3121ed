"""Every benchmark in ``benchmarks/`` still loads against the code: its imports resolve, its
module-level set-up runs (the benchmarks are not run by the suite, so a moved function would
otherwise only show when somebody measures), and the README's table names it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: not benchmarks: the delivery benchmarks' loopback partner, a server they start
HELPERS = {"fast_partner.py"}
BENCHMARKS = sorted(
    p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_") and p.name not in HELPERS
)

LOADER = textwrap.dedent(
    """
    import importlib.util, sys, traceback
    failed = []
    for path in sys.argv[1:]:
        name = "bench_" + path.rsplit("/", 1)[-1][:-3]
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            if not callable(getattr(module, "main", None)):
                failed.append(f"{path}: no main()")
        except Exception:
            failed.append(f"{path}: {traceback.format_exc(limit=3)}")
    print("\\n".join(failed))
    sys.exit(1 if failed else 0)
    """
)


def test_every_benchmark_loads_and_has_a_main() -> None:
    assert len(BENCHMARKS) >= 10
    done = subprocess.run(
        [sys.executable, "-c", LOADER, *map(str, BENCHMARKS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_benchmarks_readme_lists_every_benchmark() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    table = readme.split("| benchmark | measures | beside |", 1)[1].split("\n\n", 1)[0]
    assert {f"`{path.name}`" for path in BENCHMARKS} <= set(table.replace("|", " ").split())
