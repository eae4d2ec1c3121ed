"""The command line imports only what the command being run needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provider.cli import _command_word

PROBE = """
import sys
from provider.cli import build_parser
args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
print(args.command, "prometheus_client" in sys.modules, "spyne" in sys.modules)
"""


def probe(*argv: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_serve_starts_without_prometheus_client_loaded() -> None:
    # serve must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported.
    assert probe("--config", "x.toml", "serve", "--bind", "127.0.0.1:1") == "serve False False"


def test_other_commands_still_parse() -> None:
    assert probe("deliveries", "list").startswith("deliveries ")
    assert probe("db", "upgrade").startswith("db ")


@pytest.mark.parametrize(
    "argv,word",
    [(["serve"], "serve"), (["--config", "serve", "worker"], "worker"), (["--version"], None), ([], None)],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word
