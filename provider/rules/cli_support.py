"""What the ``rules`` sub-commands share: who makes a change, the command line, the database.

Kept apart from :mod:`provider.rules.commands` so :mod:`provider.rules.version_commands`
can use it too.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from provider.db.migrate import pending, upgrade
from provider.db.session import Database
from provider.errors import ConfigError, RulesFileError
from provider.settings import Settings


def print_problems(exc: RulesFileError, headline: str) -> None:
    """``headline``, then each of ``exc``'s problems on its own indented line, on stderr."""
    print(headline, file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def add_actor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--actor", metavar="NAME", help="who makes this change, for the audit (default: you, see README)"
    )


def _login_name() -> str:
    """The name logged in on the controlling terminal (kept under ``sudo -u``/``runuser``),
    else the name of the process's user."""
    try:
        return os.getlogin()
    except OSError:  # no controlling terminal (cron, a service, tests)
        pass
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def actor(explicit: str | None = None, environment: Mapping[str, str] | None = None) -> str:
    """Who is making a change, for the audit and ``rules versions``.

    ``--actor NAME`` as given; else the person behind ``sudo`` (``SUDO_USER`` in the
    ``environment`` the CLI passed, see :attr:`Settings.environment`) or the login name
    of the terminal, with the host: ``alice@host``. So a wrapper that runs the CLI as
    the service account still records the person.
    """
    if explicit is not None and explicit.strip():
        return " ".join(explicit.split())[:200]
    sudo_user = (environment or {}).get("SUDO_USER", "").strip()
    return f"{sudo_user or _login_name()}@{socket.gethostname()}"


def change_actor(args: argparse.Namespace, settings: Settings) -> str:
    """:func:`actor` of a change command's ``--actor`` and the CLI's environment."""
    return actor(getattr(args, "actor", None), settings.environment)


def command_line() -> str:
    return shlex.join(["st-provider", *sys.argv[1:]])[:500]


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """The configured database, migrated: the embedded SQLite default is upgraded on
    the spot; another database must be upgraded with ``st-provider db upgrade``."""
    with Database(settings.database_url) as database:
        if pending(settings.database_url):
            if not database.is_sqlite:
                raise ConfigError("the database is not at the newest migration: run `st-provider db upgrade`")
            upgrade(settings.database_url)
        yield database
