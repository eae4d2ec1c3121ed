"""LDAP and Active Directory sign-on (``ST_PROVIDER_AUTH=ldap``).

Search-then-bind when a service account is configured (``ST_PROVIDER_LDAP_BIND_DN``):
find the user under ``ST_PROVIDER_LDAP_USER_BASE`` with ``ST_PROVIDER_LDAP_USER_FILTER``
(``{username}`` escaped per RFC 4515; a typed ``user@domain`` is searched as typed and
as ``user``, ``DOMAIN\\user`` as ``user``), then check the password by binding as the
found DN on a short-lived connection. Without a service account, bind directly with a
DN built from ``ST_PROVIDER_LDAP_USER_DN_TEMPLATE``, or the typed ``user@domain`` /
``DOMAIN\\user`` (``user@ST_PROVIDER_LDAP_DEFAULT_DOMAIN`` for a plain name), then read
the user's own entry on that connection. Lookups without a service account search
anonymously (most Active Directory forests refuse that: configure a service account
for GetSignInCookieInfo and the rules' ``user``).

Groups come from ``memberOf`` when the entry has it, otherwise from a search under
``ST_PROVIDER_LDAP_GROUP_BASE`` (default: the user base) for groupOfNames ``member``,
groupOfUniqueNames ``uniqueMember`` and posixGroup ``memberUid``. With
``ST_PROVIDER_LDAP_NESTED_GROUPS`` (default on) the groups of those groups are added:
on Active Directory in one search with LDAP_MATCHING_RULE_IN_CHAIN
(1.2.840.113556.1.4.1941), elsewhere level by level (at most :data:`MAX_NESTING`), each
group's parents cached for ``ST_PROVIDER_LDAP_CACHE_TTL``.

Refusals raise :class:`~provider.errors.AuthenticationFailed` with a log-only reason
(``unknown_user``, ``bad_password``, ``disabled``, ``locked``, ``password_expired``,
``account_expired``, ``not_in_group``...); an unreachable directory raises
:class:`~provider.errors.DirectoryUnavailable`. A blank password is refused without
contacting the server. Failures that need no bind are padded to the usual duration of
a failed bind, so response times do not reveal which usernames exist.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provider.auth import base
from provider.auth.base import TimingFloor, fail
from provider.auth.cache import TTLCache
from provider.auth.ldap_connection import RESULT_INVALID_CREDENTIALS, Entry, Session
from provider.auth.ldap_pool import LdapPool
from provider.auth.usernames import Username, UsernameForm, normalise_username, parse_username
from provider.domain import Identity
from provider.errors import AuthenticationFailed, DirectoryUnavailable
from provider.settings import LdapSettings

log = logging.getLogger("provider.auth.ldap")

MAX_NESTING = 8
MAX_GROUPS = 1000
IN_CHAIN = "1.2.840.113556.1.4.1941"
USER_ATTRIBUTES = ("*", "memberOf")
#: Where an entry keeps its account name: the identity's username comes from here, not
#: from what was typed (the directory matched a look-alike such as ``\uff41\uff4c\uff49\uff43\uff45`` to it).
USERNAME_ATTRIBUTES = ("sAMAccountName", "uid")
# Code 34 (invalidDNSyntax) and 32 (noSuchObject) answer a bind name the server cannot parse or find.
_UNKNOWN_BIND_NAME_CODES = frozenset({32, 34})


@dataclass(frozen=True)
class UserReport:
    """What ``st-provider ldap check USERNAME`` shows: the entry found, or why none was."""

    username: str
    entry: Entry | None
    identity: Identity | None
    problem: str | None
    matches: int


class LdapAuthenticator:
    """An :class:`~provider.domain.Authenticator` backed by an LDAP directory or Active Directory."""

    def __init__(
        self,
        settings: LdapSettings,
        pool: LdapPool | None = None,
        *,
        timing: TimingFloor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._pool = pool if pool is not None else LdapPool(settings)
        self._clock = clock
        self._timing = timing if timing is not None else TimingFloor(cap=float(settings.timeout), clock=clock)
        self._parent_cache: TTLCache[str, tuple[str, ...]] = TTLCache(max_entries=20_000)

    @property
    def pool(self) -> LdapPool:
        """The connection pool to the configured servers."""
        return self._pool

    # --- Authenticator -----------------------------------------------------------------

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        """The identity for valid credentials; raises AuthenticationFailed or DirectoryUnavailable."""
        started = self._clock()
        name = base.login_name(username, password, backend="ldap", client=client_address)
        if self._pool.service_account:
            return self._search_then_bind(name, password, started, client_address)
        return self._direct_bind(name, password, client_address)

    def lookup(self, username: str) -> Identity | None:
        """The identity of an existing, enabled user (no password); ``None`` otherwise.

        Raises DirectoryUnavailable when the directory cannot be reached.
        """
        report = self.inspect(username)
        if report.problem is not None:
            log.info(
                "directory lookup found no usable account",
                extra={
                    "event": "auth.lookup_refused",
                    "reason": report.problem,
                    "username": username.strip(),
                },
            )
            return None
        return report.identity

    def inspect(self, username: str) -> UserReport:
        """Find ``username`` without a password: the entry, the identity, or the reason there is none."""
        try:
            name = parse_username(username)
        except ValueError:
            return UserReport(username.strip(), None, None, base.INVALID_USERNAME, 0)

        def work(session: Session) -> UserReport:
            entries = self._find(session, name)
            if not entries:
                return UserReport(name.typed, None, None, base.UNKNOWN_USER, 0)
            entry = _pick(entries, name)
            if entry is None:
                return UserReport(name.typed, None, None, base.AMBIGUOUS_USER, len(entries))
            problem = base.account_problem(entry.attributes)
            group_dns = self._group_dns(session, entry, name)
            identity = self._identity(name, entry, group_dns)
            if problem is None and not self._in_required_group(identity, group_dns):
                problem = base.NOT_IN_GROUP
            return UserReport(name.typed, entry, identity, problem, len(entries))

        if not self._pool.service_account and not self._can_search_anonymously():
            return UserReport(name.typed, None, None, "no_service_account", 0)
        return self._pool.with_service(work)

    def lookup_address(self, address: str, kind: str) -> Identity | None:
        """The enabled user whose e-mail attribute (``kind`` ``email``) or ``telephoneNumber``
        / ``mobile`` (``sms``) is ``address``; ``None`` when none, or several, match.

        ``address`` is normalised (lower-cased e-mail, E.164 number; the directory's
        telephone matching rule ignores spaces and hyphens). Raises DirectoryUnavailable.
        """
        value = base.escape_filter_value(address)
        attributes = (self._settings.email_attribute,) if kind == "email" else ("telephoneNumber", "mobile")
        search_filter = "(|" + "".join(f"({a}={value})" for a in attributes) + ")"
        if not self._settings.user_base or (
            not self._pool.service_account and not self._can_search_anonymously()
        ):
            return None

        def work(session: Session) -> Identity | None:
            entries, _ = session.search(
                self._settings.user_base, search_filter, attributes=USER_ATTRIBUTES, size_limit=2
            )
            if len(entries) != 1 or base.account_problem(entries[0].attributes) is not None:
                return None
            entry = entries[0]
            name = parse_username(entry_username(entry, Username(address, address, None, UsernameForm.PLAIN)))
            group_dns = self._group_dns(session, entry, name)
            identity = self._identity(name, entry, group_dns)
            return identity if self._in_required_group(identity, group_dns) else None

        return self._pool.with_service(work)

    # --- search, then bind ---------------------------------------------------------------

    def _search_then_bind(
        self, name: Username, password: str, started: float, client_address: str | None
    ) -> Identity:
        entries = self._pool.with_service(lambda session: self._find(session, name))
        entry = _pick(entries, name) if entries else None
        if entry is None:
            reason = base.UNKNOWN_USER if not entries else base.AMBIGUOUS_USER
            self._even_out(started, password)
            raise fail(
                reason, backend="ldap", username=name.typed, client=client_address, matches=len(entries)
            )
        problem = base.account_problem(entry.attributes)
        if problem is not None:
            self._even_out(started, password)
            raise fail(problem, backend="ldap", username=name.typed, dn=entry.dn, client=client_address)
        outcome, _ = self._pool.bind_as(entry.dn, password)
        self._timing.observe(self._clock() - started)
        if not outcome.ok:
            raise self._bind_failure(outcome.code, outcome.message, name, entry.dn, client_address)
        group_dns = self._pool.with_service(lambda session: self._group_dns(session, entry, name))
        return self._accept(name, entry, group_dns, client_address)

    def _even_out(self, started: float, password: str) -> None:
        """Make a failure without a bind take as long as one with a bind (see module docstring)."""
        if not self._timing.known:
            # No failed bind measured yet in this process: do a real one with a random
            # password against a DN that cannot exist, and learn from it.
            decoy = f"cn=st-provider-decoy-{secrets.token_hex(8)},{self._settings.user_base or 'dc=invalid'}"
            try:
                self._pool.bind_as(decoy, secrets.token_urlsafe(max(8, len(password))))
            except (DirectoryUnavailable, ValueError) as exc:  # the decoy never changes the answer
                log.debug(
                    "decoy bind failed", extra={"event": "ldap.decoy_failed", "error": type(exc).__name__}
                )
            self._timing.observe(self._clock() - started)
            return
        self._timing.pad(started)

    def _bind_failure(
        self, code: int, message: str, name: Username, dn: str, client_address: str | None
    ) -> AuthenticationFailed:
        reason = base.ad_bind_reason(message)
        if reason is None:
            if code == RESULT_INVALID_CREDENTIALS:
                reason = base.BAD_PASSWORD
            elif code in _UNKNOWN_BIND_NAME_CODES:
                reason = base.UNKNOWN_USER
            else:
                reason = base.BIND_REFUSED
        return fail(reason, backend="ldap", username=name.typed, dn=dn, code=code, client=client_address)

    # --- direct bind --------------------------------------------------------------------

    def bind_name(self, name: Username) -> str:
        """What to bind with when there is no service account."""
        template = self._settings.user_dn_template
        if template:
            return template.replace("{username}", base.escape_dn_value(name.account))
        if name.form is UsernameForm.UPN:
            return name.typed
        if name.down_level:
            return name.down_level
        if self._settings.default_domain:
            return f"{name.account}@{self._settings.default_domain}"
        return name.account

    def _direct_bind(self, name: Username, password: str, client_address: str | None) -> Identity:
        bind_name = self.bind_name(name)

        def own_entry(session: Session) -> tuple[Entry | None, list[str]]:
            entry = self._own_entry(session, name, bind_name)
            if entry is None:
                return None, []
            return entry, self._group_dns(session, entry, name)

        outcome, found = self._pool.bind_as(bind_name, password, then=own_entry)
        if not outcome.ok:
            raise self._bind_failure(outcome.code, outcome.message, name, bind_name, client_address)
        entry, group_dns = found if found is not None else (None, [])
        if entry is None:
            log.warning(
                "bound, but could not read the user's entry",
                extra={"event": "ldap.own_entry_missing", "username": name.typed},
            )
            entry = Entry(dn=bind_name if "=" in bind_name else "", attributes={})
        problem = base.account_problem(entry.attributes)
        if problem is not None:
            raise fail(problem, backend="ldap", username=name.typed, dn=entry.dn, client=client_address)
        return self._accept(name, entry, group_dns, client_address)

    def _own_entry(self, session: Session, name: Username, bind_name: str) -> Entry | None:
        if self._settings.user_dn_template:
            return session.read(bind_name, USER_ATTRIBUTES)
        if self._settings.user_base:
            return _pick(self._find(session, name), name)
        dn = session.who_am_i()
        return session.read(dn, USER_ATTRIBUTES) if dn and "=" in dn else None

    def _can_search_anonymously(self) -> bool:
        return bool(self._settings.user_base or self._settings.user_dn_template)

    # --- finding users ------------------------------------------------------------------

    def user_filter(self, name: Username) -> str:
        """The search filter for ``name``: the configured filter once per candidate value, OR-ed."""
        filters = [base.fill_filter(self._settings.user_filter, value) for value in name.candidates]
        unique = list(dict.fromkeys(filters))
        return unique[0] if len(unique) == 1 else "(|" + "".join(unique) + ")"

    def _find(self, session: Session, name: Username) -> list[Entry]:
        if not self._settings.user_base and self._settings.user_dn_template:
            entry = session.read(self.bind_name(name), USER_ATTRIBUTES)
            return [entry] if entry is not None else []
        entries, _truncated = session.search(
            self._settings.user_base, self.user_filter(name), attributes=USER_ATTRIBUTES, size_limit=3
        )
        return entries

    # --- groups ---------------------------------------------------------------------------

    def _group_base(self) -> str:
        return self._settings.group_base or self._settings.user_base

    def _group_dns(self, session: Session, entry: Entry, name: Username) -> list[str]:
        """The DNs of every group ``entry`` is in (nested ones too when configured)."""
        group_base = self._group_base()
        if self._settings.nested_groups and group_base and self._pool.is_active_directory:
            found, _ = session.search(
                group_base,
                f"(member:{IN_CHAIN}:={base.escape_filter_value(entry.dn)})",
                attributes=("1.1",),
                size_limit=MAX_GROUPS,
            )
            return [g.dn for g in found]
        direct = list(entry.get("memberOf"))
        if not direct and group_base:
            clauses = [
                f"(member={base.escape_filter_value(entry.dn)})",
                f"(uniqueMember={base.escape_filter_value(entry.dn)})",
            ]
            uid = entry.first("uid") or name.account
            clauses.append(f"(&(objectClass=posixGroup)(memberUid={base.escape_filter_value(uid)}))")
            found, _ = session.search(
                group_base, "(|" + "".join(clauses) + ")", attributes=("1.1",), size_limit=MAX_GROUPS
            )
            direct = [g.dn for g in found]
        if not self._settings.nested_groups or not group_base:
            return direct
        return self._expand(session, group_base, direct)

    def _expand(self, session: Session, group_base: str, direct: Sequence[str]) -> list[str]:
        """Add the groups that contain the given groups, level by level (cycles and depth bounded).

        Each group's parents are cached for ``ST_PROVIDER_LDAP_CACHE_TTL`` seconds: nesting
        changes rarely and is shared by every user, so most logins need no search for it.
        """
        seen = {base.dn_key(dn) for dn in direct}
        result = list(direct)
        frontier = list(direct)
        for _level in range(MAX_NESTING):
            if not frontier or len(result) >= MAX_GROUPS:
                break
            found_now: list[str] = []
            for group in frontier:
                for parent in self._parents(session, group_base, group):
                    key = base.dn_key(parent)
                    if key not in seen:
                        seen.add(key)
                        result.append(parent)
                        found_now.append(parent)
            frontier = found_now
        return result[:MAX_GROUPS]

    def _parents(self, session: Session, group_base: str, group: str) -> tuple[str, ...]:
        key = base.dn_key(group)
        hit, cached = self._parent_cache.get(key)
        if hit and cached is not None:
            return cached
        value = base.escape_filter_value(group)
        found, _ = session.search(
            group_base,
            f"(|(member={value})(uniqueMember={value}))",
            attributes=("1.1",),
            size_limit=MAX_GROUPS,
        )
        parents = tuple(g.dn for g in found)
        self._parent_cache.put(key, parents, self._settings.cache_ttl)
        return parents

    def _in_required_group(self, identity: Identity, group_dns: Sequence[str]) -> bool:
        required = self._settings.require_group
        return not required or base.group_matches(required, identity.groups, group_dns)

    # --- results ----------------------------------------------------------------------------

    def _identity(self, name: Username, entry: Entry, group_dns: Sequence[str]) -> Identity:
        attributes = {k: v for k, v in entry.attributes.items() if not base.is_secret_attribute(k)}
        display = entry.first(self._settings.display_name_attribute) or entry.first("cn")
        names = list(dict.fromkeys(base.rdn_value(dn) for dn in group_dns))
        return Identity(
            username=entry_username(entry, name),
            email=entry.first(self._settings.email_attribute),
            display_name=display,
            dn=entry.dn or None,
            attributes=attributes,
            groups=tuple(names),
        )

    def _accept(
        self, name: Username, entry: Entry, group_dns: Sequence[str], client_address: str | None
    ) -> Identity:
        identity = self._identity(name, entry, group_dns)
        if not self._in_required_group(identity, group_dns):
            raise fail(
                base.NOT_IN_GROUP,
                backend="ldap",
                username=name.typed,
                dn=entry.dn,
                required_group=self._settings.require_group,
                client=client_address,
            )
        log.info(
            "directory accepted the password",
            extra={
                "event": "auth.ok",
                "backend": "ldap",
                "username": identity.username,
                "typed": name.typed,
                "dn": entry.dn,
            },
        )
        return identity


def entry_username(entry: Entry, name: Username) -> str:
    """The account name the directory gives ``entry`` (:data:`USERNAME_ATTRIBUTES`).

    Falls back to the typed account (NFKC, as parsed) only for an entry without one.
    """
    for attribute in USERNAME_ATTRIBUTES:
        value = entry.first(attribute)
        if value and value.strip():
            return value.strip()
    return name.account


def _pick(entries: Sequence[Entry], name: Username) -> Entry | None:
    """The one entry meant by ``name``; ``None`` when several match and none exactly by the typed name."""
    if len(entries) == 1:
        return entries[0]
    typed = normalise_username(name.typed)
    exact = [
        e
        for e in entries
        if any(
            normalise_username(v) == typed
            for attr in ("userPrincipalName", "mail", "uid")
            for v in e.get(attr)
        )
    ]
    return exact[0] if len(exact) == 1 else None
