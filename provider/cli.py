"""The ``st-provider`` command line: the only place that reads the environment.

Settings come from ``ST_PROVIDER_*`` environment variables, over an optional TOML
file named by ``--config`` or ``ST_PROVIDER_CONFIG`` (flat keys like
``web_service_password``, or tables like ``[ldap] url`` for ``ldap_url``).
Each capability registers its own sub-commands (``register(subparsers)``); a
handler takes ``(args, settings)`` and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from provider import __version__
from provider.errors import ConfigError, ProviderError
from provider.logging import configure_logging
from provider.settings import ENV_PREFIX, Settings

Handler = Callable[[argparse.Namespace, Settings], int]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: stdout was closed early (``st-provider deliveries list | head -1``): 128 + SIGPIPE, as a shell says
EXIT_BROKEN_PIPE = 141


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}".lower()
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "_"))
        else:
            flat[name] = value
    return flat


def settings_values(environ: Mapping[str, str], config_file: str | None) -> dict[str, Any]:
    """Plain setting names -> raw values: the TOML file first, the environment over it."""
    values: dict[str, Any] = {}
    path = config_file or environ.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            values.update(_flatten(tomllib.loads(Path(path).read_text(encoding="utf-8"))))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key != f"{ENV_PREFIX}CONFIG":
            values[key[len(ENV_PREFIX) :].lower()] = value
    return values


def load_settings(environ: Mapping[str, str], config_file: str | None = None) -> Settings:
    return Settings.from_mapping(settings_values(environ, config_file), environment=environ)


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from provider.db.migrate import upgrade

    upgrade(settings.database_url, args.revision)
    print(f"database at {args.revision}")
    return EXIT_OK


def _cmd_db_purge(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from provider.db.session import Database
    from provider.journal.retention import purge

    database = Database(settings.database_url)
    try:
        report = purge(database, settings.retention, now=datetime.now(UTC), dry_run=args.dry_run)
    finally:
        database.dispose()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {report.total} rows")
    for table, count in report.removed.items():
        print(f"  {table}: {count}")
    return EXIT_OK


#: How each command uses the database: a command path ("rules validate"), else its first word.
#: "creates": a missing SQLite file is made (db upgrade; serve, which logs the database);
#: "reads": works without one (rules validate reads stored channels only if there are some);
#: "needs": a missing SQLite file is refused unless --create is given, so a command run from
#: another directory never fills a new, empty database the service does not read.
#: Every command that uses the database prints it (password hidden) on stderr, except serve.
DATABASE_USE: dict[str, str] = {
    "serve": "serves",
    "db upgrade": "creates",
    "rules validate": "reads",
    "rules": "needs",
    "users": "needs",
    "worker": "needs",
    "deliveries": "needs",
    "events": "needs",
    "calls": "needs",
    "templates": "needs",
    "db purge": "needs",
    "optout": "needs",
}

#: Which module registers each top-level command. Only the module of the command being
#: run is imported, so `serve` starts with nothing loaded that must come after its set-up
#: (prometheus_client reads PROMETHEUS_MULTIPROC_DIR when first imported).
COMMAND_MODULES: dict[str, str] = {
    "serve": "provider.server_commands",
    "call": "provider.server_commands",
    "wsdl": "provider.soap.commands",
    "rules": "provider.rules.commands",
    "users": "provider.auth.commands",
    "ldap": "provider.auth.commands",
    "worker": "provider.events.commands",
    "deliveries": "provider.events.commands",
    "events": "provider.events.commands",
    "calls": "provider.journal.commands",
    "optout": "provider.comms.optout_commands",
    "templates": "provider.comms.template_commands",
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The top-level command in ``argv`` (skipping ``--config FILE``), if any."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``argv`` only the module of the command being run is imported."""
    parser = argparse.ArgumentParser(prog="st-provider", description="SmarterTrack External Provider")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="TOML configuration file (else $ST_PROVIDER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply pending migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_cmd_db_upgrade)
    purge = db_sub.add_parser(
        "purge", help="remove what retention no longer keeps (call journal, old events, rules audit)"
    )
    purge.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    purge.set_defaults(handler=_cmd_db_purge)

    word = _command_word(argv) if argv is not None else None
    if word in COMMAND_MODULES:
        modules = [COMMAND_MODULES[word]]
    elif word == "db":
        modules = []
    else:  # help, or an unknown command: list them all
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    _mark_database_use(parser)
    return parser


def _leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable (sub-)command's parser with its command path."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, child in group.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def _mark_database_use(parser: argparse.ArgumentParser) -> None:
    """Tag each command with its :data:`DATABASE_USE`; give the "needs" ones ``--create``."""
    for path, leaf in _leaf_parsers(parser):
        use = DATABASE_USE.get(" ".join(path)) or DATABASE_USE.get(path[0] if path else "")
        leaf.set_defaults(database_use=use)
        if use == "needs":
            leaf.add_argument(
                "--create",
                action="store_true",
                help="create the database when its SQLite file does not exist (else that is an error: "
                "usually another working directory or ST_PROVIDER_DATABASE_URL than the service's)",
            )


def announce_database(settings: Settings, use: str | None, *, create: bool = False) -> None:
    """Say which database the command uses (stderr, password hidden); for "needs" commands,
    refuse a missing SQLite file, or create and migrate it when ``create``."""
    if use is None or use == "serves":
        return
    from provider.db.session import describe_url, require_existing, sqlite_file

    url = settings.database_url
    path = sqlite_file(url)
    missing = path is not None and not path.exists()
    note = " (does not exist yet)" if missing and use != "needs" else ""
    print(f"st-provider: database {describe_url(url)}{note}", file=sys.stderr)
    if use != "needs" or not missing:
        return
    if not create:
        require_existing(url)
    from provider.db.migrate import upgrade

    upgrade(url)
    print(f"st-provider: created the database {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failure, 2 usage or configuration)."""
    env = os.environ if environ is None else environ
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        settings = load_settings(env, args.config)
    except ConfigError as exc:
        print(f"st-provider: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    handler: Handler = args.handler
    try:
        announce_database(
            settings, getattr(args, "database_use", None), create=getattr(args, "create", False)
        )
        status = handler(args, settings)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"st-provider: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ProviderError as exc:
        print(f"st-provider: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null after a broken pipe, so the exit flush raises nothing.

    The Python documentation's recipe (signal module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass


def wsgi_application() -> Any:
    """The WSGI application for plain gunicorn: ``gunicorn -c deploy/gunicorn.conf.py``.

    gunicorn calls this in each worker (``wsgi_app = "provider.cli:wsgi_application()"``).
    Settings come from the environment as for every command. Raises ConfigError without
    the Web Service Password or when the database is behind the newest migration (run
    ``st-provider db upgrade`` first); gunicorn then stops with "App failed to load".
    """
    from provider.app import build_application
    from provider.db.isolated import require_migrated  # in a child: a web worker never imports Alembic

    settings = load_settings(os.environ)
    configure_logging(settings.log_level, settings.log_format)
    settings.require_password()
    require_migrated(settings.database_url)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    return build_application(settings, metrics_dir=metrics_dir)


if __name__ == "__main__":
    sys.exit(main())
