"""Usernames as people type them: every form, trimming, case, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider.auth.usernames import (
    Username,
    UsernameForm,
    display_form,
    normalise_username,
    parse_username,
    username_key,
)


@pytest.mark.parametrize(
    ("typed", "account", "domain", "form"),
    [
        ("alice", "alice", None, UsernameForm.PLAIN),
        ("  Alice  ", "Alice", None, UsernameForm.PLAIN),
        ("EXAMPLE\\alice", "alice", "EXAMPLE", UsernameForm.DOWN_LEVEL),
        ("example/Alice", "Alice", "example", UsernameForm.DOWN_LEVEL),
        (" EXAMPLE \\ alice ", "alice", "EXAMPLE", UsernameForm.DOWN_LEVEL),
        ("alice@example.org", "alice", "example.org", UsernameForm.UPN),
        ("a@b@example.org", "a@b", "example.org", UsernameForm.UPN),
        ("jürgen@example.org", "jürgen", "example.org", UsernameForm.UPN),
        # The sample splits on the first separator of either kind.
        ("CORP\\dept/bob", "dept/bob", "CORP", UsernameForm.DOWN_LEVEL),
        ("pat*(ops)", "pat*(ops)", None, UsernameForm.PLAIN),
    ],
)
def test_forms(typed: str, account: str, domain: str | None, form: UsernameForm) -> None:
    name = parse_username(typed)
    assert (name.account, name.domain, name.form) == (account, domain, form)


def test_case_is_preserved_but_the_key_folds_every_form_together() -> None:
    names = [parse_username(t) for t in ("Alice", "EXAMPLE\\ALICE", "alice@Example.org", "example/aLiCe")]
    assert [n.account for n in names] == ["Alice", "ALICE", "alice", "aLiCe"]
    assert {n.key for n in names} == {"alice"}


def test_candidates_search_a_upn_as_typed_first() -> None:
    assert parse_username("alice@example.org").candidates == ("alice@example.org", "alice")
    assert parse_username("EXAMPLE\\alice").candidates == ("alice",)
    assert parse_username("alice").candidates == ("alice",)


def test_down_level_normalises_the_slash_form() -> None:
    assert parse_username("example/alice").down_level == "example\\alice"
    assert parse_username("alice").down_level is None


@pytest.mark.parametrize(
    "typed", ["", "   ", "EXAMPLE\\", "\\alice", "/alice", "alice@", "@example.org", "al\nice", "x" * 300]
)
def test_unusable_names_are_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_username(typed)


def test_long_keys_are_hashed_to_a_bounded_length() -> None:
    name = parse_username("u" * 250)
    assert name.key.startswith("sha256:")
    assert len(name.key) < 80


@given(st.text(min_size=1, max_size=80))
def test_parsing_never_crashes_and_keeps_the_account_inside_the_input(text: str) -> None:
    try:
        name = parse_username(text)
    except ValueError:
        return
    assert isinstance(name, Username)
    assert name.account
    assert name.account == name.account.strip()
    assert name.account in display_form(text)
    assert name.key == username_key(name.account)


@given(st.text(min_size=1, max_size=80))
def test_normalising_is_idempotent(text: str) -> None:
    once = normalise_username(text)
    assert normalise_username(once) == once


# Look-alikes OpenLDAP matches to uid=alice: fullwidth, mixed, enclosed (circled), and case.
LOOK_ALIKES = [
    "\uff41\uff4c\uff49\uff43\uff45",
    "\uff41lice",
    "ⓐlice",
    "\uff21\uff2c\uff29\uff23\uff25",
    "\u3000Alice\u3000",
    "Ⓐ\uff2c\uff29\uff23\uff25",
]


@pytest.mark.parametrize("typed", LOOK_ALIKES)
def test_look_alike_spellings_share_one_key(typed: str) -> None:
    assert normalise_username(typed) == "alice"
    assert parse_username(typed).key == "alice"
    assert parse_username(typed).account == display_form(typed)


def test_fullwidth_separators_split_like_plain_ones() -> None:
    down_level = parse_username(
        "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\uff3c\uff41\uff4c\uff49\uff43\uff45"
    )
    assert (down_level.domain, down_level.account, down_level.key) == ("EXAMPLE", "alice", "alice")
    upn = parse_username("\uff41\uff4c\uff49\uff43\uff45\uff20example.org")
    assert (upn.form, upn.account, upn.key) == (UsernameForm.UPN, "alice", "alice")


def test_case_folding_is_full_and_the_display_form_keeps_case() -> None:
    assert normalise_username("STRASSE") == normalise_username("Straße") == "strasse"
    assert display_form("  \uff21lice ") == "Alice"


def test_a_huge_input_is_refused_before_it_is_normalised() -> None:
    with pytest.raises(ValueError):
        parse_username("\ufdfa" * 5000)
