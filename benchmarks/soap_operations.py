"""SOAP cost per call of the seven operations, in process: the fast path, the Spyne path, bare Spyne.

Usage::

    python benchmarks/soap_operations.py [--seconds S] [--rounds N] [--json] [--profile N]
                                         [--profile-journal] [--no-freeze]

Imports 21 rules into a fresh SQLite database (the three sample files in ``rules/`` and one
more ``GetCustomFieldOptions`` rule) and measures, in this process and without HTTP, the CPU
time per call (all threads of the process: the call journal's writer included) of each of the
seven operations with representative inputs (SOAP 1.1, as .NET's XmlSerializer writes them):

==========================  =======================================================================
row                         what runs
==========================  =======================================================================
ours, fast path             ``provider.app.build_application`` with default settings: the fast path
ours, Spyne path            the same with ``ST_PROVIDER_SOAP_FAST_PATH=off`` (the path before issue 14)
fast, no journal            the fast path with ``ST_PROVIDER_JOURNAL=off``: the call journal's share
bare Spyne                  a Spyne WSGI application of the same contract (``provider.soap.contract``)
                            answering a constant result: no router, codec, domain or rules
raw lxml                    parse the envelope, build and serialise a constant answer by hand
==========================  =======================================================================

The stacks are measured in alternating rounds (``--rounds``, each ``--seconds`` of CPU time per
stack and operation), so a burst of other work on the machine hits every stack alike; each
figure is the best round. It prints microseconds per call and the ratio to bare Spyne per
operation and for three sums: all seven; the six without ``Authenticate`` (whose cost is the
local user's scrypt password check, about 0.1 s by design); the five without
``NotifyEventFired`` too (it stores the event, a database transaction, before answering).
Issue 14 goal 1: ours at most **0.5x** bare Spyne. ``--profile N`` then profiles ours (fast path, journal off: the journal's writer thread
would otherwise be charged to whatever the request thread was doing when it took the GIL)
over N rounds of the six calls without a password hash with cProfile and prints the own
time by category and the top functions; with ``--profile-journal`` it profiles the fast path
with the call journal on instead, and has the journal's writer write what is queued after
every round in the profiled thread (building the entries and inserting them), so the
journal's whole cost is in the profile. Exit status 0 when measured, 2 when an
answer was wrong. Takes about 30 seconds.

Garbage collection: once every stack is built, the process's objects are frozen
(``gc.collect(); gc.freeze()``), as ``st-provider serve`` does before forking its workers, so
the collections during the rounds walk what the calls allocate, not the applications' long-lived
objects. The call journal keeps each call's values until its writer flushes them, which makes
collections more frequent; without the freeze a full collection walks every object of the
process, and the journal's share looks about twice as large as in a served worker.
``--no-freeze`` measures that way.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from lxml import etree
from spyne import Application
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provider.app import ProviderApplication, build_application
from provider.auth.local import LocalUsers
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import Operation
from provider.journal.writer import JournalWriter
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.soap.client import build_envelope, request_headers
from provider.soap.contract import OPERATIONS, SERVICE_NAME, SOAP11_ENV, build_services, build_types

NAMESPACE = "http://tempuri.org/"
PASSWORD = "bench-web-service-password"  # a throwaway password for a loopback run
USER, USER_PASSWORD = "jdoe", "bench-user-password-1"  # a throwaway local user
GOAL = 0.5
SORT, LIMIT = "tottime", 25
REPO = Path(__file__).resolve().parent.parent
RULE_FILES = ("sample-provider.yaml", "directory-groups.yaml", "notifications.yaml")
EXTRA_RULE = {
    "name": "priority-options-for-emea",
    "method": "GetCustomFieldOptions",
    "when": "cf.get('Region') == 'EMEA'",
    "then": {"fields": [{"name": "Priority", "list": ["Low", "Normal", "High"], "required": True}]},
}

_COMMON = (f"authPW={PASSWORD}", "loginUsername=jdoe", "location=REGULAR", "brandName=Example Hosting")
# Representative inputs per operation (what SmarterTrack sends; see the seeds' variable tables).
INPUTS: dict[Operation, tuple[str, ...]] = {
    Operation.AUTHENTICATE: (f"authPW={PASSWORD}", "loginUsername=jdoe", f"loginPassword={USER_PASSWORD}"),
    Operation.GET_SIGN_IN_COOKIE_INFO: (f"authPW={PASSWORD}", "cookieValue=a1b2c3d4e5f6", "location=PORTAL"),
    Operation.GET_CUSTOM_FIELD_OPTIONS: (
        *_COMMON,
        "departmentName=Support Department",
        "cf_Ticket Type=Phone Ticket",
        "cf_Account=abc.com",
        "cf_Priority=High",
        "cf_Product=Mail & Web <Pro> = \u00e9t\u00e9",
        "cf_Region=EMEA",
    ),
    Operation.START_TICKET: (
        *_COMMON,
        "departmentName=Support Department",
        "emailFrom=jdoe@example.org",
        "subject=Server down since 9:00",
        "cf_Account=abc.com",
    ),
    Operation.START_CHAT: (*_COMMON, "departmentName=Sales", "emailFrom=jdoe@example.org"),
    Operation.GET_USER_DETAILS: (*_COMMON,),
    # An event no sample rule notifies about: no delivery is stored (goal 4 measures those).
    Operation.NOTIFY_EVENT_FIRED: (
        f"authPW={PASSWORD}",
        "eventType=502001",
        "eventName=Ticket Updated",
        "args_Ticket=12345",
        "args_subject=Printer on fire",
    ),
}
FAST, SPYNE, BARE, LXML = "ours, fast path", "ours, Spyne path", "bare Spyne", "raw lxml"
QUIET = "fast, no journal"
_SEVEN = tuple(Operation)
_NO_HASH = tuple(op for op in _SEVEN if op is not Operation.AUTHENTICATE)
#: The sums reported. Authenticate's cost is the local user's scrypt password check (by design,
#: about 0.1 s); NotifyEventFired stores the event (a database transaction) before answering.
GROUPS: dict[str, tuple[Operation, ...]] = {
    "all seven": _SEVEN,
    "six, no password hash": _NO_HASH,
    "five, no database write": tuple(op for op in _NO_HASH if op is not Operation.NOTIFY_EVENT_FIRED),
}


def rule_set() -> str:
    """The 21 rules: the three sample files merged, and :data:`EXTRA_RULE`."""
    merged: dict[str, Any] = {"rules": []}
    for name in RULE_FILES:
        document = yaml.safe_load((REPO / "rules" / name).read_text(encoding="utf-8"))
        for key, value in document.items():
            if key == "rules":
                merged["rules"].extend(value)
            else:
                merged.setdefault(key, {}).update(value)
    merged["rules"].append(EXTRA_RULE)
    return yaml.safe_dump(merged, sort_keys=False)


def import_rule_set(database_url: str) -> int:
    """Import :func:`rule_set` and the local user ``jdoe`` (group Customers) into the database.

    Returns the number of rules. Without the user, the sample's ``customers-only`` rule would
    refuse every call before the other rules run.
    """
    database = Database(database_url)
    try:
        rules = parse_rules(rule_set())
        RuleStore(database).import_rules(rules, replace=True, actor="bench", command="bench")
        LocalUsers(database).add(
            USER, USER_PASSWORD, email="jdoe@example.org", display_name="J. Doe", groups=("Customers",)
        )
        return len(rules.rules)
    finally:
        database.dispose()


def bare_application() -> Any:
    """Spyne over the same contract types, answering each operation with a constant result."""
    types = build_types(NAMESPACE)
    answers = {}
    for spec in OPERATIONS:
        values: dict[str, Any] = {"Success": True, "Message": "Result okay"}
        members = {m for m, _ in types[spec.result]._type_info.items()}
        if "OutputVariables" in members:
            values["OutputVariables"] = ["CanStartTickets=True", "CanStartChats=True"]
        if "CustomFieldDataItems" in members:
            values["CustomFieldDataItems"] = []
        answers[spec.name] = types[spec.result](**values)
    services = build_services(types, lambda spec, inputs, types, call: answers[spec.name])
    protocol = Soap11()
    app = Application(services, tns=NAMESPACE, name=SERVICE_NAME, in_protocol=protocol, out_protocol=Soap11())
    return WsgiApplication(app)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def lxml_round_trip(body: bytes, operation: str) -> bytes:
    """Parse the envelope, read the variables, build and serialise a constant answer by hand."""
    root = etree.fromstring(body, _PARSER)
    variables = [element.text for element in root.iter(f"{{{NAMESPACE}}}string")]
    if not variables:
        raise RuntimeError("the benchmark envelope lost its variables")
    envelope = etree.Element(f"{{{SOAP11_ENV}}}Envelope", nsmap={"soap": SOAP11_ENV})
    body_element = etree.SubElement(envelope, f"{{{SOAP11_ENV}}}Body")
    response = etree.SubElement(body_element, f"{{{NAMESPACE}}}{operation}Response", nsmap={None: NAMESPACE})
    result = etree.SubElement(response, f"{{{NAMESPACE}}}{operation}Result")
    etree.SubElement(result, f"{{{NAMESPACE}}}Success").text = "true"
    etree.SubElement(result, f"{{{NAMESPACE}}}Message").text = "Result okay"
    outputs = etree.SubElement(result, f"{{{NAMESPACE}}}OutputVariables")
    for entry in ("CanStartTickets=True", "CanStartChats=True"):
        etree.SubElement(outputs, f"{{{NAMESPACE}}}string").text = entry
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def wsgi_caller(app: Any, operation: Operation) -> Callable[[], bytes]:
    """A zero-argument function posting the operation's envelope to ``app``; checks a 200."""
    body = build_envelope(operation, list(INPUTS[operation]), namespace=NAMESPACE)
    headers = request_headers(operation, namespace=NAMESPACE)

    def call() -> bytes:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/ExternalProvider.asmx",
            "QUERY_STRING": "",
            "CONTENT_TYPE": headers["Content-Type"],
            "HTTP_SOAPACTION": headers["SOAPAction"],
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
        }
        statuses: list[str] = []
        answer = b"".join(app(environ, lambda status, _headers: statuses.append(status)))
        if not statuses or not statuses[0].startswith("200") or b"Result>" not in answer:
            raise RuntimeError(f"{operation} answered {statuses}: {answer[:300]!r}")
        return answer

    return call


def cpu_per_call(fn: Callable[[], object], seconds: float) -> float:
    """Mean CPU seconds of this process (every thread) per call over about ``seconds``."""
    for _ in range(10):
        fn()
    calls = 0
    start = time.process_time()
    while True:
        for _ in range(10):
            fn()
        calls += 10
        used = time.process_time() - start
        if used >= seconds:
            return used / calls


def build_ours(database_url: str, *, fast_path: bool, journal: bool = True) -> ProviderApplication:
    values = {"web_service_password": PASSWORD, "database_url": database_url, "rules_refresh_seconds": "3600"}
    values["soap_fast_path"] = "on" if fast_path else "off"
    values["journal"] = "on" if journal else "off"
    return build_application(Settings.from_mapping(values, environment={}))


def measure(
    seconds: float, rounds: int, profile: int, *, profile_journal: bool = False, freeze: bool = True
) -> dict[str, Any]:
    """Microseconds per call by stack and operation (best of the rounds), and the profile text."""
    logging.getLogger("spyne.util.appreg").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-soap-ops-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'ops.db'}"
        upgrade(database_url)
        rule_count = import_rule_set(database_url)
        fast, spyne = build_ours(database_url, fast_path=True), build_ours(database_url, fast_path=False)
        quiet = build_ours(database_url, fast_path=True, journal=False)
        bare = bare_application()
        stacks: dict[str, dict[Operation, Callable[[], object]]] = {
            FAST: {op: wsgi_caller(fast, op) for op in Operation},
            SPYNE: {op: wsgi_caller(spyne, op) for op in Operation},
            QUIET: {op: wsgi_caller(quiet, op) for op in Operation},
            BARE: {op: wsgi_caller(bare, op) for op in Operation},
            LXML: {op: _lxml_caller(op) for op in Operation},
        }
        for op in Operation:  # same answers from both of our paths
            if stacks[FAST][op]() != stacks[SPYNE][op]():
                raise RuntimeError(f"the fast path and the Spyne path answer {op} differently")
        best: dict[str, dict[str, float]] = {label: {} for label in stacks}
        if freeze:  # as serve does before it forks (see the module docstring)
            gc.collect()
            gc.freeze()
        try:
            for index in range(rounds):
                labels = list(stacks) if index % 2 == 0 else list(reversed(stacks))
                for op in Operation:
                    for label in labels:
                        micros = cpu_per_call(stacks[label][op], seconds) * 1e6
                        best[label][op.value] = min(best[label].get(op.value, float("inf")), micros)
            profile_text = ""
            if profile > 0 and profile_journal:
                writer = cast(JournalWriter, fast.journal)
                profile_text = _profile(stacks[FAST], profile, flush=writer.flush)
            elif profile > 0:
                profile_text = _profile(stacks[QUIET], profile)
        finally:
            gc.unfreeze()
            for app in (fast, spyne, quiet):
                if isinstance(app.journal, JournalWriter):
                    app.journal.close()  # what is queued, written before the database goes
                if app.database is not None:
                    app.database.dispose()
    return {"microseconds": best, "profile": profile_text, "rules": rule_count}


def _lxml_caller(operation: Operation) -> Callable[[], bytes]:
    body = build_envelope(operation, list(INPUTS[operation]), namespace=NAMESPACE)
    return lambda: lxml_round_trip(body, operation.value)


#: Where the profiled time goes: the first category whose path fragment is in a function's file.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("soap/ (router, parse, fast path)", "provider/soap/"),
    ("rules/ (evaluation)", "provider/rules/"),
    ("journal/ (entry building)", "provider/journal/"),
    ("database (SQLAlchemy, sqlite3)", "sqlalchemy"),
    ("database (SQLAlchemy, sqlite3)", "sqlite3"),
    ("domain (calls, auth, variables, events)", "provider/"),
    ("metrics (prometheus_client)", "prometheus_client"),
    ("logging", "logging"),
)


def _profile(
    calls: dict[Operation, Callable[[], object]], rounds: int, *, flush: Callable[[], object] | None = None
) -> str:
    """cProfile of ``rounds`` rounds of the six calls: time by category, then the top functions.
    ``flush`` (the journal writer's) is called after every round, inside the profile."""
    profiler = cProfile.Profile()
    if flush is not None:
        flush()
    profiler.enable()
    for _ in range(rounds):
        for op in GROUPS["six, no password hash"]:
            calls[op]()
        if flush is not None:
            flush()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    shares: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        where = filename if filename != "~" else function
        label = next((name for name, part in CATEGORIES if part in where), "other (C built-ins, stdlib)")
        shares[label] = shares.get(label, 0.0) + own
    total = sum(shares.values()) or 1.0
    journal = "journal on, its writes included" if flush is not None else "journal off"
    out.write(f"profile of {rounds} rounds of the six calls (fast path, {journal}), own time by category:\n")
    for label, own in sorted(shares.items(), key=lambda item: -item[1]):
        out.write(f"  {label:<44}{100 * own / total:>6.1f} %\n")
    stats.sort_stats(SORT).print_stats(LIMIT)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="CPU seconds per stack, operation, round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (4)")
    parser.add_argument("--profile", type=int, default=0, help="profile N rounds of the fast path (0: no)")
    parser.add_argument(
        "--profile-journal",
        action="store_true",
        help="profile the fast path with the call journal on, its writes in the profiled thread",
    )
    parser.add_argument(
        "--no-freeze", action="store_true", help="do not freeze the process's objects before the rounds"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        report = measure(
            args.seconds,
            args.rounds,
            args.profile,
            profile_journal=args.profile_journal,
            freeze=not args.no_freeze,
        )
    except RuntimeError as exc:
        print(f"soap_operations: {exc}", file=sys.stderr)
        return 2
    micros: dict[str, dict[str, float]] = report["microseconds"]
    groups = {name: [op.value for op in ops] for name, ops in GROUPS.items()}
    totals = {
        name: {label: sum(v[op] for op in ops) for label, v in micros.items()} for name, ops in groups.items()
    }
    ratios = {name: {label: t[label] / t[BARE] for label in t} for name, t in totals.items()}
    if args.json:
        print(json.dumps({**report, "totals": totals, "ratio_to_bare_spyne": ratios, "goal": GOAL}, indent=2))
        return 0
    print(
        f"SOAP cost per call in process, {report['rules']} rules, SOAP 1.1, CPU time of the process "
        f"(best of {args.rounds} alternating rounds x {args.seconds:g} s)"
    )
    labels = list(micros)
    print(f"  {'operation':<24}" + "".join(f"{label:>18}" for label in labels) + f"{'fast / bare':>13}")
    for op in Operation:
        row = "".join(f"{micros[label][op.value]:>15.1f} us" for label in labels)
        print(f"  {op.value:<24}{row}{micros[FAST][op.value] / micros[BARE][op.value]:>13.2f}")
    for name, total in totals.items():
        row = "".join(f"{total[label]:>15.1f} us" for label in labels)
        print(f"  {name:<24}{row}{ratios[name][FAST]:>13.2f}")
    for name, ratio in ratios.items():
        verdict = "meets" if ratio[FAST] <= GOAL else "misses"
        print(
            f"  {name}: fast path / bare Spyne {ratio[FAST]:.2f} ({verdict} the goal of at most {GOAL}); "
            f"fast path / Spyne path {totals[name][FAST] / totals[name][SPYNE]:.2f}"
        )
    if report["profile"]:
        print(report["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
