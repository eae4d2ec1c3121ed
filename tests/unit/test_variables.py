"""The variable=value codec: parsing, case-insensitivity, prefixes and exact round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider.errors import InvalidInput
from provider.variables import (
    INT32_MAX,
    InputVariables,
    OutputVariables,
    format_entry,
    parse_whole_number,
    split_entry,
)


def test_split_on_first_equals_keeps_the_rest_of_the_value() -> None:
    assert split_entry("cf_Formula=a=b==c") == ("cf_Formula", "a=b==c")
    assert split_entry("novalue") is None
    assert split_entry("empty=") == ("empty", "")


def test_names_match_case_insensitively() -> None:
    variables = InputVariables.parse(["authPW=secret", "LoginUsername=Ann"])
    assert variables["AuthPW"] == "secret"
    assert variables.get("loginusername") == "Ann"
    assert "AUTHPW" in variables
    assert "missing" not in variables


def test_entries_without_equals_and_none_are_ignored() -> None:
    variables = InputVariables.parse(["junk", None, "a=1", "=orphan"])
    assert dict(variables) == {"a": "1"}


@pytest.mark.parametrize("entries", [None, []])
def test_absent_list_is_empty(entries: list[str] | None) -> None:
    assert len(InputVariables.parse(entries)) == 0


def test_last_occurrence_wins() -> None:
    variables = InputVariables.parse(["dept=Sales", "DEPT=Support"])
    assert variables["dept"] == "Support"
    assert variables.pairs == (("dept", "Sales"), ("DEPT", "Support"))


def test_custom_fields_and_arguments_are_split_out() -> None:
    variables = InputVariables.parse(
        [
            "cf_Type of Issue=Email issues",
            "CF_Plan=Gold",
            "args_title=Hello",
            "Args_Ticket=42",
            "cf_=x",
            "eventType=502000",
        ]
    )
    assert variables.custom_fields == {"Type of Issue": "Email issues", "Plan": "Gold"}
    assert variables.arguments == {"title": "Hello", "Ticket": "42"}
    assert variables.plain() == {"eventType": "502000"}


def test_repr_never_shows_values() -> None:
    assert "hunter2" not in repr(InputVariables.parse(["authPW=hunter2"]))


def test_output_set_replaces_in_place() -> None:
    output = OutputVariables([("TicketCreation", "TRUE"), ("departmentName", "Sales")])
    output.set("DEPARTMENTNAME", "Critical Support")
    output.set("cf_Escalated", "yes")
    assert output.to_list() == ["TicketCreation=TRUE", "departmentName=Critical Support", "cf_Escalated=yes"]
    assert output.get("departmentname") == "Critical Support"


@pytest.mark.parametrize("name", ["", "  ", "a=b"])
def test_output_rejects_invalid_names(name: str) -> None:
    with pytest.raises(ValueError):
        OutputVariables().set(name, "x")
    if "=" in name:
        with pytest.raises(ValueError):
            format_entry(name, "x")


names = st.text(min_size=1).filter(lambda s: "=" not in s and s.strip() == s and s != "")


@given(st.lists(st.tuples(names, st.text()), max_size=20))
def test_output_round_trips_through_parse(items: list[tuple[str, str]]) -> None:
    output = OutputVariables(items)
    parsed = InputVariables.parse(output.to_list())
    assert [(n, v) for n, v in parsed.pairs] == output.items()
    for name, value in output.items():
        assert parsed[name] == value


@given(names, st.text())
def test_single_entry_round_trip(name: str, value: str) -> None:
    assert split_entry(format_entry(name, value)) == (name, value)


@pytest.mark.parametrize(
    ("raw", "number"),
    [("0", 0), ("502000", 502000), (" 7\t", 7), ("2147483647", INT32_MAX), ("0" * 50 + "1", 1)],
)
def test_whole_numbers_are_ascii_digits_in_range(raw: str, number: int) -> None:
    assert parse_whole_number("eventType", raw) == number
    assert InputVariables.parse([f"EVENTTYPE={raw}"]).whole_number("eventType") == number


@pytest.mark.parametrize(
    "raw",
    ["²", "٣", "\uff11\uff12", "x", "-1", "+1", "1.0", "1e3", "1_000", "2147483648", "9" * 30, "9" * 5000],
)
def test_anything_else_is_invalid_input_naming_the_variable_not_the_value(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        InputVariables.parse([f"eventType={raw}"]).whole_number("eventType")
    assert info.value.variable == "eventType"
    assert str(info.value) == "eventType must be a whole number between 0 and 2147483647"


def test_a_missing_or_blank_number_is_none() -> None:
    assert InputVariables.parse(["eventType= "]).whole_number("eventType") is None
    assert InputVariables.parse([]).whole_number("eventType") is None
    assert parse_whole_number("n", "12", maximum=12) == 12
    with pytest.raises(InvalidInput, match="n must be a whole number between 0 and 12"):
        parse_whole_number("n", "13", maximum=12)
