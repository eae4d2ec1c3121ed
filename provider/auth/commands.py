"""The ``st-provider`` sub-commands of the auth capability.

``st-provider users add|passwd|phone|remove|list|enable|disable|unlock`` manage the built-in
authenticator's users (``list`` shows a lock set by failed logins and until when, in
UTC with a ``Z``; ``unlock`` clears the brute-force counters of any username,
directory users included). Passwords are read from a prompt on a terminal, or from
the first line of standard input otherwise, never from the command line.

``st-provider ldap check [USERNAME] [--password]`` connects to every configured
server and reports TLS and the service bind, then the search result, account state
and groups for USERNAME; with ``--password`` it also checks that user's password.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from provider.auth.explain import utc_text
from provider.auth.ldap import LdapAuthenticator
from provider.auth.ldap_check import (
    ACCEPTED,
    CONNECTION_HINT,
    REFUSED,
    UserCheck,
    check_connection,
    check_user,
)
from provider.auth.ldap_pool import LdapPool
from provider.auth.local import ADMIN, VIEWER, LocalUsers, UserError
from provider.auth.throttle import KeyStatus, Throttle, user_key
from provider.db.session import Database
from provider.errors import ConfigError
from provider.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the CLI."""
    users = subparsers.add_parser("users", help="manage the built-in authenticator's users")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = users_sub.add_parser("add", help="add a user (the password is read from a prompt or stdin)")
    add.add_argument("username")
    add.add_argument("--email")
    add.add_argument("--display-name")
    add.add_argument("--group", action="append", default=[], help="a group name (repeatable)")
    add.add_argument(
        "--phone", help="an international phone number (+CC...): finds the user for sign-in codes"
    )
    add.add_argument("--disabled", action="store_true", help="create the account disabled")
    role = add.add_mutually_exclusive_group()
    role.add_argument(
        "--admin",
        dest="console_role",
        action="store_const",
        const=ADMIN,
        help="may sign in to the console and change things",
    )
    role.add_argument(
        "--viewer",
        dest="console_role",
        action="store_const",
        const=VIEWER,
        help="may sign in to the console, read-only",
    )
    add.set_defaults(handler=_cmd_add)

    passwd = users_sub.add_parser("passwd", help="set a user's password (read from a prompt or stdin)")
    passwd.add_argument("username")
    passwd.set_defaults(handler=_cmd_passwd)

    phone = users_sub.add_parser("phone", help="set or clear a user's phone number (sign-in codes by SMS)")
    phone.add_argument("username")
    which = phone.add_mutually_exclusive_group(required=True)
    which.add_argument("number", nargs="?", help="an international phone number (+CC...)")
    which.add_argument("--clear", action="store_true", help="remove the phone number")
    phone.set_defaults(handler=_cmd_phone)

    remove = users_sub.add_parser("remove", help="remove a user")
    remove.add_argument("username")
    remove.set_defaults(handler=_cmd_remove)

    listing = users_sub.add_parser("list", help="list the users")
    listing.set_defaults(handler=_cmd_list)

    for action, enabled in (("enable", True), ("disable", False)):
        command = users_sub.add_parser(action, help=f"{action} a user")
        command.add_argument("username")
        command.set_defaults(handler=_cmd_enable, enabled=enabled)

    unlock = users_sub.add_parser(
        "unlock", help="clear the failed-login counters of a username (any backend)"
    )
    unlock.add_argument("username")
    unlock.set_defaults(handler=_cmd_unlock)

    ldap = subparsers.add_parser("ldap", help="directory diagnostics")
    ldap_sub = ldap.add_subparsers(dest="ldap_command", required=True, metavar="ACTION")
    check = ldap_sub.add_parser("check", help="check the LDAP settings (servers, TLS, bind, a user)")
    check.add_argument("username", nargs="?")
    check.add_argument(
        "--password",
        action="store_true",
        help="also check USERNAME's password (read from a prompt or stdin, never the command line)",
    )
    check.set_defaults(handler=_cmd_ldap_check)


# --- passwords --------------------------------------------------------------------------


def read_password(prompt: str, *, confirm: bool, stdin: TextIO | None = None) -> str:
    """A password from the terminal (asked twice when ``confirm``) or the first line of stdin."""
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("Again: ") != first:
            raise UserError("the passwords do not match")
        return first
    line = stream.readline()
    return line[:-1] if line.endswith("\n") else line


# --- users ------------------------------------------------------------------------------------


@contextmanager
def _users(settings: Settings) -> Iterator[LocalUsers]:
    """The local users in the configured database, closed again after the block."""
    with Database(settings.database_url) as database:
        yield LocalUsers(database)


def user_status(enabled: bool, lock: KeyStatus | None) -> str:
    """``enabled``/``disabled``, plus ``locked until <UTC time>Z`` while the throttle holds the name."""
    status = "enabled" if enabled else "disabled"
    if lock is not None and lock.locked_until is not None:
        status += f", locked until {utc_text(lock.locked_until)} (failed logins)"
    return status


def _cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(f"Password for {args.username}: ", confirm=True)
    with _users(settings) as users:
        record = users.add(
            args.username,
            password,
            email=args.email,
            display_name=args.display_name,
            groups=args.group,
            enabled=not args.disabled,
            console_role=args.console_role,
            phone=args.phone,
        )
    role = f" (console {record.console_role})" if record.console_role else ""
    print(f"added {record.username}{role}" + ("" if record.enabled else " (disabled)"))
    return EXIT_OK


def _cmd_passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(f"New password for {args.username}: ", confirm=True)
    with _users(settings) as users:
        users.set_password(args.username, password)
    print(f"password changed for {args.username.strip()}")
    return EXIT_OK


def _cmd_phone(args: argparse.Namespace, settings: Settings) -> int:
    with _users(settings) as users:
        number = users.set_phone(args.username, None if args.clear else args.number)
    print(
        f"phone of {args.username.strip()}: {number}"
        if number
        else f"phone of {args.username.strip()} cleared"
    )
    return EXIT_OK


def _cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _users(settings) as users:
        users.remove(args.username)
    print(f"removed {args.username.strip()}")
    return EXIT_OK


def _cmd_enable(args: argparse.Namespace, settings: Settings) -> int:
    with _users(settings) as users:
        users.set_enabled(args.username, args.enabled)
    print(f"{'enabled' if args.enabled else 'disabled'} {args.username.strip()}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        records = LocalUsers(database).list_users()
        keys = {record.username: user_key(record.username) for record in records}
        locks = Throttle(database, settings.throttle).status(k for k in keys.values() if k)
    print("username\tstatus\temail\tphone\tdisplay name\tgroups\tconsole")
    for record in records:
        key = keys[record.username]
        print(
            "\t".join(
                [
                    record.username,
                    user_status(record.enabled, locks.get(key) if key else None),
                    record.email or "-",
                    record.phone or "-",
                    record.display_name or "-",
                    ", ".join(record.groups) or "-",
                    record.console_role or "-",
                ]
            )
        )
    return EXIT_OK


def _cmd_unlock(args: argparse.Namespace, settings: Settings) -> int:
    key = user_key(args.username)
    if key is None:
        raise UserError(f"not a usable username: {args.username!r}")
    with Database(settings.database_url) as database:
        cleared = Throttle(database, settings.throttle).clear([key])
    print(f"unlocked {args.username.strip()}" if cleared else f"{args.username.strip()} had no failed logins")
    return EXIT_OK


# --- ldap check -------------------------------------------------------------------------------


def _cmd_ldap_check(args: argparse.Namespace, settings: Settings) -> int:
    if settings.ldap is None:
        raise ConfigError("ST_PROVIDER_LDAP_URL is not set: there is no directory to check")
    ldap = settings.ldap
    password = None
    if args.password:
        if not args.username:
            raise ConfigError("--password needs a USERNAME")
        password = read_password(f"Password for {args.username}: ", confirm=False)
    pool = LdapPool(ldap)
    try:
        print(f"auth backend: {settings.auth}")
        if ldap.ca_file:
            print(f"CA file: {ldap.ca_file}")
        connection = check_connection(pool)
        for report in connection.servers:
            status = "ok" if report.ok else "FAILED"
            print(f"server {report.url}: {status} ({report.seconds * 1000:.0f} ms)")
            print(f"  tls: {report.tls}")
            print(f"  bind: {report.service_bind}")
            if report.error:
                print(f"  error: {report.error}")
        healthy = connection.ok
        if not healthy:
            print(f"hint: {CONNECTION_HINT}")
        if args.username:
            user = check_user(LdapAuthenticator(ldap, pool), args.username, password)
            _print_user(user)
            healthy = user.ok and healthy
    finally:
        pool.close()
    print("result: ok" if healthy else "result: problems found")
    return EXIT_OK if healthy else EXIT_FAILURE


def _print_user(check: UserCheck) -> None:
    """``ldap check USERNAME``'s lines for one :class:`UserCheck`."""
    report = check.report
    if report is None:
        print(f"user {check.username}: directory unavailable ({check.unavailable})")
        return
    print(f"user {check.username}:")
    print(f"  filter: {check.search_filter}")
    if report.entry is None:
        print(f"  not found ({report.problem}; {report.matches} entries matched)")
    else:
        identity = report.identity
        print(f"  dn: {report.entry.dn}")
        if identity is not None:
            print(f"  email: {identity.email or '-'}")
            print(f"  display name: {identity.display_name or '-'}")
            print(f"  groups: {', '.join(identity.groups) or '-'}")
        print(f"  account: {'usable' if report.problem is None else report.problem}")
    password = check.password
    if password is None:
        return
    if password.outcome == ACCEPTED:
        print("  password: accepted")
    elif password.outcome == REFUSED:
        print(f"  password: refused ({password.reason})")
    else:
        print(f"  password: not checked, {password.detail}")
