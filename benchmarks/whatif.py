"""What-if: replaying 10,000 journaled calls against 50 rules (the issue's goal: under 10 s).

Usage::

    python benchmarks/whatif.py [--calls N] [--rules N] [--json]

Fills a fresh SQLite database's call journal with ``--calls`` StartTicket calls (10,000 by
default: ten input variables each, one of 50 users with groups and directory attributes),
compiles ``--rules`` rules (50 by default, the five kinds of ``benchmarks/rules_eval.py``:
keyword, custom-field, regular-expression, group and user conditions, each setting a
templated output variable) as the current rule set, and a draft in which every fifth rule
sets another value; then times :func:`provider.rules.whatif.whatif` (reading the journal,
answering every call twice through the domain's Provider, comparing the answers) in this
process. Prints the wall time (and the CPU time: on a machine shared with other work the
wall time says more about the neighbours), calls per second and how many calls changed, then
the same with the current rule set as its own draft (operations whose rules are identical are
not evaluated at all); exit status 0 when measured (``--strict``: 1 above the goal).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules_eval import rule_set_yaml  # the benchmarks directory is not a package
from sqlalchemy import insert

from provider.db.journal import CallJournalRecord
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.rules.engine import compile_rules
from provider.rules.loader import parse_rules
from provider.rules.whatif import whatif

GOAL_SECONDS = 10.0


def journal_rows(count: int, now: datetime) -> list[dict[str, object]]:
    """``count`` journaled StartTicket calls of 50 users, newest last, all within the last hour."""
    rows = []
    for i in range(count):
        user = f"user{i % 50}"
        rows.append(
            {
                "at": now - timedelta(seconds=(count - i) * 0.3),
                "operation": "StartTicket",
                "request_id": f"{i:032x}",
                "client": "192.0.2.10",
                "duration_ms": 2.5,
                "outcome": "ok",
                "username": user,
                "variables": [
                    ["loginUsername", user],
                    ["emailFrom", f"{user}@example.org"],
                    ["departmentName", f"Dept {i % 10} Sales"],
                    ["subject", f"URGENT: KEYWORD{i % 10} printer on fire"],
                    ["ticketNumber", f"ABC-{i}"],
                    ["location", "PRE"],
                    ["cf_Issue Type", f"type {i % 10}"],
                    ["cf_Plan", "Gold"],
                    ["cf_Region", "EMEA"],
                    ["brandName", "Example"],
                ],
                "identity": {
                    "username": user,
                    "email": f"{user}@example.org",
                    "display_name": user.title(),
                    "dn": f"uid={user},ou=people,dc=example,dc=org",
                    "groups": ["Customers", f"Group{i % 10}"],
                    "attributes": {"department": ["Sales"], "accounts": ["abc.com", "def.com"]},
                },
                "matched": [],
                "answer": None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 above {GOAL_SECONDS:g} s")
    args = parser.parse_args(argv)
    current_text = rule_set_yaml(args.rules)
    draft_text = current_text.replace(
        "{{ loginUsername }} /", "{{ loginUsername }} (draft) /", args.rules // 5
    )
    assert draft_text != current_text
    current = compile_rules(parse_rules(current_text).rules)
    draft = compile_rules(parse_rules(draft_text).rules)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'journal.db'}"
        upgrade(url)
        database = Database(url)
        with database.session() as session:
            session.execute(insert(CallJournalRecord), journal_rows(args.calls, now))
        started, cpu_started = time.perf_counter(), time.process_time()
        report = whatif(database, current, draft, since=now - timedelta(days=1), limit=args.calls, now=now)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        identical = time.perf_counter()
        same = whatif(database, current, current, since=now - timedelta(days=1), limit=args.calls, now=now)
        identical_seconds = time.perf_counter() - identical
        database.dispose()
    result = {
        "calls": args.calls,
        "rules": args.rules,
        "replayed": report.replayed,
        "changed": report.changed,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "identical_rule_set_seconds": round(identical_seconds, 2),
        "identical_rule_set_changed": same.changed,
        "calls_per_second": round(report.replayed / seconds, 1) if seconds else None,
        "goal_seconds": GOAL_SECONDS,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "meets" if seconds < GOAL_SECONDS else "ABOVE"
        print(
            f"what-if: {report.replayed} journaled calls replayed against {args.rules} rules (current and "
            f"draft) in {seconds:.2f} s ({cpu:.2f} s of CPU; {result['calls_per_second']} calls/s), "
            f"{report.changed} changed; {verdict} the goal of {GOAL_SECONDS:g} s"
        )
        print(f"  the same rule set as its own draft: {identical_seconds:.2f} s, {same.changed} changed")
    return 1 if args.strict and seconds >= GOAL_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
