"""The pure parts of :mod:`provider.comms.signin_scrub`: finding a code by its hash, the
event link, what reports show."""

from __future__ import annotations

from provider.comms.signin_scrub import code_hash, code_id_of, codes_in, event_fingerprint, hide_params
from provider.db.signin import SignInCode
from provider.redact import REDACTED


def row_for(code: str, address: str = "alice@example.org") -> SignInCode:
    salt = b"s" * 16
    return SignInCode(id=7, address=address, salt=salt.hex(), code_hash=code_hash(salt, address, code))


def test_a_code_is_found_by_its_hash_wherever_the_template_puts_it() -> None:
    row = row_for("4XK9P2QA")
    assert codes_in(["<p>Your code:<b>4XK9P2QA</b></p>"], row) == {"4XK9P2QA"}
    assert codes_in(["1234 4XK9P2QB 4XK9P2Q"], row) == set()  # near misses are not it
    assert codes_in(["code 123456"], row_for("123456", "bob@example.org")) == {"123456"}
    assert codes_in(["code 123456"], row_for("123456")) == {"123456"}
    assert codes_in(["code 123456"], row_for("654321")) == set()


def test_the_event_fingerprint_names_the_code_row() -> None:
    first, second = event_fingerprint(42), event_fingerprint(42)
    assert first != second and len(first) <= 64  # the column's size; unique per event
    assert code_id_of(first) == 42
    assert code_id_of("a" * 64) is None and code_id_of(None) is None and code_id_of("signin-code:x:y") is None


def test_reports_show_only_the_recipient() -> None:
    params = {"to": "+14155550123", "body": {"text": "Code 123456"}, "subject": "s"}
    assert hide_params(params, "+14155550123") == {
        "to": "+14155550123",
        "body": REDACTED,
        "subject": REDACTED,
    }
