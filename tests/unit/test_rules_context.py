"""The call context rules see: SmarterTrack names, cf/args/user/groups, and never a password."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider.domain import Identity, Operation
from provider.rules.context import CANONICAL_NAMES, CONTEXT_NAMES, CaseInsensitiveDict, Values, build_context
from provider.variables import InputVariables


def context(*entries: str, identity: Identity | None = None, op: Operation = Operation.START_TICKET) -> dict:
    return build_context(op, InputVariables.parse(entries), identity)


def test_inputs_under_their_smartertrack_names_matched_case_insensitively() -> None:
    ctx = context(
        "LOGINUSERNAME=ann",
        "DepartmentName=Sales",
        "location=PRE",
        "EmailFrom=a@example.org",
        "Subject=Hi = there",
        "TicketNumber=ABC-1",
        "UserName=bob",
        "EMAIL=b@example.org",
        "brandname=Brand",
        "GroupName=Tier 1",
        "interactiontype=ticket",
    )
    assert ctx["loginUsername"] == "ann"
    assert ctx["departmentName"] == "Sales"
    assert ctx["subject"] == "Hi = there"
    assert ctx["username"] == "bob" and ctx["email"] == "b@example.org"
    assert ctx["groupName"] == "Tier 1" and ctx["interactionType"] == "ticket"
    assert ctx["method"] == "StartTicket"


def test_inputs_not_sent_are_empty_text() -> None:
    ctx = context()
    assert all(ctx[name] == "" for name in CANONICAL_NAMES if name != "eventType")
    assert ctx["eventType"] is None and ctx["eventName"] is None


def test_group_alias_fills_group_name() -> None:
    assert context("Group=Tier 2")["groupName"] == "Tier 2"
    assert context("Group=Tier 2", "groupName=Tier 3")["groupName"] == "Tier 3"


@pytest.mark.parametrize(
    ("raw", "number", "name"),
    [
        ("502000", 502000, "Ticket Created"),
        (" 511000 ", 511000, "Live Chat Started"),
        ("1", 1, None),
        ("x", None, None),
        ("²", None, None),
        ("-5", None, None),
        ("9" * 30, None, None),
        ("9" * 5000, None, None),
    ],
    ids=lambda value: str(value)[:12],
)
def test_event_type_is_an_integer_with_its_name(raw: str, number: int | None, name: str | None) -> None:
    ctx = context(f"eventType={raw}", op=Operation.NOTIFY_EVENT_FIRED)
    assert ctx["eventType"] == number
    assert ctx["eventName"] == name


def test_custom_fields_and_arguments_without_prefix_case_insensitive() -> None:
    ctx = context("cf_Issue Type=Server Down", "CF_plan=Gold", "args_Title=Hello", "Args_id=7")
    assert ctx["cf"]["issue type"] == "Server Down" and ctx["cf"]["Plan"] == "Gold"
    assert list(ctx["cf"]) == ["Issue Type", "plan"]
    assert ctx["args"]["title"] == "Hello" and ctx["args"]["ID"] == "7"
    assert "ISSUE TYPE" in ctx["cf"] and "nope" not in ctx["cf"]
    with pytest.raises(KeyError):
        ctx["cf"]["nope"]
    assert ctx["cf"].get("nope", "d") == "d"


_SUFFIX = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="="), min_size=1, max_size=8
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cf_", "CF_", "Cf_", "args_", "ARGS_", "", "x_"]), _SUFFIX, st.text(max_size=5)
        ),
        max_size=8,
    )
)
def test_cf_args_and_variables_find_every_name_sent_in_any_case(sent: list[tuple[str, str, str]]) -> None:
    # The context reuses the folding the call's variables did once (Turkish dotted I, Greek
    # final sigma, ligatures): each name sent is found under itself and its lower case, with
    # the value of its last occurrence, exactly as InputVariables finds it.
    entries = [f"{prefix}{suffix}={value}" for prefix, suffix, value in sent]
    variables = InputVariables.parse(entries)
    ctx = build_context(Operation.START_TICKET, variables, None)
    for name in variables:
        folded = name.lower()
        if folded.startswith("cf_") and len(folded) > 3:
            mapping, key = ctx["cf"], name[3:]
        elif folded.startswith("args_") and len(folded) > 5:
            mapping, key = ctx["args"], name[5:]
        elif folded in ("authpw", "loginpassword"):
            continue
        else:
            mapping, key = ctx["variables"], name
        assert key in mapping and key.lower() in mapping
        assert mapping[key] == mapping[key.lower()] == variables[name]


def test_passwords_are_never_in_the_context() -> None:
    ctx = context(
        "authPW=ws-secret", "loginPassword=user-secret", "LoginPassword=again", "AUTHPW=x", "subject=s"
    )
    flat = repr(ctx)
    assert "secret" not in flat and "again" not in flat
    assert "authPW" not in ctx and "loginPassword" not in ctx
    assert set(ctx["variables"]) == {"subject"}
    assert set(ctx) == CONTEXT_NAMES


def test_user_and_groups_from_the_identity() -> None:
    identity = Identity(
        username="ann",
        email="ann@example.org",
        display_name="Ann Example",
        dn="uid=ann,ou=people,dc=example,dc=org",
        attributes={
            "department": ["Sales"],
            "memberOf": ["cn=a", "cn=b"],
            "accounts": ["abc.com", "def.com"],
        },
        groups=("Customers", "VIP"),
    )
    ctx = context(identity=identity)
    user = ctx["user"]
    assert user["username"] == "ann" and user["email"] == "ann@example.org"
    assert user["display_name"] == "Ann Example" and user["dn"].startswith("uid=ann")
    assert user["DEPARTMENT"] == "Sales"  # one value equals its text
    assert str(user["accounts"]) == "abc.com, def.com"
    assert "def.com" in user["accounts"] and user["accounts"] != "abc.com"
    assert "customers" in ctx["groups"] and "Nobody" not in ctx["groups"]
    assert list(ctx["groups"]) == ["Customers", "VIP"]


def test_no_identity_means_empty_user_and_groups() -> None:
    ctx = context("loginUsername=ann")
    assert dict(ctx["user"]) == {} and tuple(ctx["groups"]) == ()


def test_values_and_case_insensitive_dict_behave_as_documented() -> None:
    assert Values(("a",)) == "a" and Values(("a", "b")) != "a" and Values(("a",)) == ("a",)
    assert str(Values(())) == ""
    d = CaseInsensitiveDict([("Name", 1), ("NAME", 2)])
    assert dict(d) == {"NAME": 2} and d["name"] == 2


@pytest.mark.parametrize("sent", ["bob", " BOB ", "\uff42\uff4f\uff42", "\u24d1ob", "\uff22ob"])
def test_usernames_are_normalised_and_the_sent_value_stays_in_variables(sent: str) -> None:
    ctx = context(f"loginUsername={sent}", f"username={sent}")
    assert ctx["loginUsername"] == "bob" and ctx["username"] == "bob"
    assert ctx["variables"]["loginUsername"] == sent
