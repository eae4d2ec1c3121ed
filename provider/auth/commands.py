"""The `st-provider` sub-commands of the auth capability."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add this capability's sub-commands to the CLI."""
