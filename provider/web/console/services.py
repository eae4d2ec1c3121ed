"""What the console's pages talk to: the same functions and stores the CLI commands use.

One :class:`ConsoleServices` per serving process, built by :func:`console_services`. Views
never run SQL of their own: they call the rule store, the journal and event reports here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from provider.db.session import Database
from provider.domain import Authenticator
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.web.console.signin import ConsoleSignIn

_WEB = resources.files("provider.web")


@dataclass(frozen=True)
class ConsoleServices:
    """The console's collaborators; ``clock`` (seconds since the epoch) is injectable for tests."""

    database: Database
    sign_in: ConsoleSignIn
    readiness: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    template_folder: Path = Path(str(_WEB.joinpath("templates")))
    static_folder: Path = Path(str(_WEB.joinpath("static")))
    #: the serving settings (Test a call, Directory, the rules editor); None in tests that need neither
    settings: Settings | None = None
    #: the provider's (throttled) authenticator: user lookups and directory password tests
    authenticator: Authenticator | None = None

    @property
    def rules(self) -> RuleStore:
        return RuleStore(self.database)
