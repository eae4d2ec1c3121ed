"""The domain call layer: password check, each operation's outputs, and how plug-in outcomes map to results."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from provider.assembly import build_provider
from provider.calls import (
    DIRECTORY_UNAVAILABLE,
    EVENT_NOT_STORED,
    INVALID_INPUT,
    PERMISSION_DENIED,
    STORAGE_UNAVAILABLE,
    Provider,
)
from provider.db.session import Database
from provider.domain import CallRequest, CustomFieldData, Decision, Identity, Notification, Operation
from provider.errors import AuthenticationFailed, DirectoryError, StorageError
from provider.settings import Secret, Settings
from provider.variables import InputVariables
from tests.plugins import DictAuthenticator, FixedRules, ListSink

PW = "s3cret=pw"
INVALID_INPUT_EVENT_TYPE = f"{INVALID_INPUT}: eventType must be a whole number between 0 and 2147483647"
ANN = Identity(username="ann", email="ann@example.org", display_name="Ann Example", groups=("Customers",))


def call(provider: Provider, op: Operation, *entries: str, password: str | None = PW) -> object:
    items = ([f"authPW={password}"] if password is not None else []) + list(entries)
    return provider.call(
        CallRequest(op, InputVariables.parse(items), client_address="192.0.2.7", request_id="r1")
    )


@pytest.fixture
def directory() -> DictAuthenticator:
    return DictAuthenticator(users={"ann": ("pw", ANN)})


@pytest.mark.parametrize("op", list(Operation))
@pytest.mark.parametrize("password", [None, "", "wrong", PW + " ", PW.upper()])
def test_wrong_or_missing_password_is_denied_and_logged_without_value(
    op: Operation, password: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(Secret(PW))
    with caplog.at_level(logging.WARNING, logger="provider.calls"):
        result = call(provider, op, "loginUsername=ann", password=password)
    assert result.success is False
    assert result.message == PERMISSION_DENIED
    assert result.output.to_list() == []
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "security.permission_denied"]
    assert record.operation == op.value
    assert record.password_supplied is (password is not None)
    assert "wrong" not in caplog.text and PW not in caplog.text


def test_previous_password_accepted_during_rotation() -> None:
    told: list[None] = []
    provider = Provider(
        Secret("new"), previous_password=Secret("old"), on_previous_password=lambda: told.append(None)
    )
    assert call(provider, Operation.START_TICKET, password="old").success
    assert call(provider, Operation.START_TICKET, password="new").success
    assert not call(provider, Operation.START_TICKET, password="older").success
    # Only the call that still used the old password is reported: the operator's cue to drop it.
    assert len(told) == 1


def test_the_assembled_provider_counts_previous_password_calls(sqlite_url: str) -> None:
    settings = Settings.from_mapping(
        {
            "web_service_password": "new-password-0123456789",
            "previous_web_service_password": "old-password-0123456789",
            "database_url": sqlite_url,
            "auth": "none",
        }
    )
    database = Database(settings.database_url)
    try:
        provider = build_provider(settings, database)
        before = REGISTRY.get_sample_value("st_provider_previous_password_calls_total") or 0.0
        assert call(provider, Operation.START_TICKET, password="old-password-0123456789").success
        assert call(provider, Operation.START_TICKET, password="new-password-0123456789").success
        assert REGISTRY.get_sample_value("st_provider_previous_password_calls_total") == before + 1
    finally:
        database.dispose()


def test_empty_password_setting_refused() -> None:
    with pytest.raises(ValueError):
        Provider(Secret(""))


def test_neutral_answers_without_plugins() -> None:
    provider = Provider(Secret(PW))
    assert call(provider, Operation.AUTHENTICATE, "loginUsername=a", "loginPassword=b").output.to_list() == [
        "Authentication=FAIL"
    ]
    fields = call(provider, Operation.GET_CUSTOM_FIELD_OPTIONS)
    assert fields.output.to_list() == ["CanStartTickets=True", "CanStartChats=True"]
    assert call(provider, Operation.START_TICKET).output.to_list() == ["TicketCreation=TRUE"]
    assert call(provider, Operation.START_CHAT).output.to_list() == ["ChatCreation=TRUE"]
    details = call(provider, Operation.GET_USER_DETAILS)
    assert details.success and details.user_info_html is None
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, "eventType=502000").success


@pytest.mark.parametrize(
    "entries", [(), ("loginUsername=ann",), ("loginPassword=pw",), ("loginUsername=  ", "loginPassword=pw")]
)
def test_authenticate_requires_username_and_password(
    entries: tuple[str, ...], directory: DictAuthenticator
) -> None:
    result = call(Provider(Secret(PW), authenticator=directory), Operation.AUTHENTICATE, *entries)
    assert (result.success, result.message) == (False, "Required Input Missing")


def test_authenticate_ok_outputs_email_and_display_name(directory: DictAuthenticator) -> None:
    result = call(
        Provider(Secret(PW), authenticator=directory),
        Operation.AUTHENTICATE,
        "LoginUsername= ann ",
        "loginPassword=pw",
    )
    assert result.success and result.message == "Login Successful"
    assert result.output.to_list() == [
        "Authentication=OK",
        "EmailAddress=ann@example.org",
        "DisplayName=Ann Example",
    ]


@pytest.mark.parametrize("username,password", [("ann", "nope"), ("bob", "pw")])
def test_authenticate_failure_is_success_true_with_fail(
    username: str, password: str, directory: DictAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="provider.calls"):
        result = call(
            Provider(Secret(PW), authenticator=directory),
            Operation.AUTHENTICATE,
            f"loginUsername={username}",
            f"loginPassword={password}",
        )
    assert (result.success, result.message, result.output.to_list()) == (
        True,
        "Login Failure",
        ["Authentication=FAIL"],
    )
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "login.fail"]
    assert record.reason in {"bad_password", "unknown_user"}
    assert "nope" not in caplog.text


def test_directory_outage_is_success_false(directory: DictAuthenticator) -> None:
    directory.down = True
    provider = Provider(Secret(PW), authenticator=directory)
    for op, entries in [
        (Operation.AUTHENTICATE, ("loginUsername=ann", "loginPassword=pw")),
        (Operation.GET_SIGN_IN_COOKIE_INFO, ("loginUsername=ann",)),
    ]:
        result = call(provider, op, *entries)
        assert (result.success, result.message) == (False, DIRECTORY_UNAVAILABLE)
    # Other operations go on without the user.
    assert call(provider, Operation.START_TICKET, "loginUsername=ann").output.to_list() == [
        "TicketCreation=TRUE"
    ]


def test_sign_in_cookie_looks_up_without_password(directory: DictAuthenticator) -> None:
    provider = Provider(Secret(PW), authenticator=directory)
    assert (
        call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=ann").output.get("Authentication")
        == "OK"
    )
    assert (
        call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=zed").output.get("Authentication")
        == "FAIL"
    )


def test_rules_deny_and_set(directory: DictAuthenticator) -> None:
    rules = FixedRules(
        {
            Operation.AUTHENTICATE: Decision(variables=[("cf_Plan", "Gold"), ("DisplayName", "Ann E.")]),
            Operation.START_TICKET: Decision(allow=False, message="No tickets left"),
            Operation.START_CHAT: Decision(variables=[("departmentName", "Sales"), ("cf_Note", "a=b <&>")]),
            Operation.GET_SIGN_IN_COOKIE_INFO: Decision(allow=False, message="Blocked"),
        }
    )
    provider = Provider(Secret(PW), authenticator=directory, rules=rules)
    login = call(provider, Operation.AUTHENTICATE, "loginUsername=ann", "loginPassword=pw")
    assert login.output.to_list() == [
        "Authentication=OK",
        "EmailAddress=ann@example.org",
        "DisplayName=Ann E.",
        "cf_Plan=Gold",
    ]
    assert rules.seen[-1][2] == ANN
    ticket = call(provider, Operation.START_TICKET, "loginUsername=ann")
    assert (ticket.success, ticket.message, ticket.output.to_list()) == (
        True,
        "No tickets left",
        ["TicketCreation=FALSE"],
    )
    chat = call(provider, Operation.START_CHAT)
    assert chat.output.to_list() == ["ChatCreation=TRUE", "departmentName=Sales", "cf_Note=a=b <&>"]
    cookie = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=ann")
    assert (cookie.message, cookie.output.to_list()) == ("Blocked", ["Authentication=FAIL"])


def test_custom_field_options_from_rules(directory: DictAuthenticator) -> None:
    field = CustomFieldData(name="Type of Issue", change_list_options=True, list_options=("A", "B"))
    rules = FixedRules(
        {Operation.GET_CUSTOM_FIELD_OPTIONS: Decision(allow_tickets=False, fields=[field], message="m")}
    )
    result = call(
        Provider(Secret(PW), authenticator=directory, rules=rules),
        Operation.GET_CUSTOM_FIELD_OPTIONS,
        "loginUsername=ann",
    )
    assert result.output.to_list() == ["CanStartTickets=False", "CanStartChats=True"]
    assert result.custom_fields == [field]
    assert result.message == "m"
    assert directory.lookups == ["ann"]
    assert rules.seen[-1][2] == ANN

    rules.decisions[Operation.GET_CUSTOM_FIELD_OPTIONS] = Decision(allow=False, fields=[field])
    denied = call(Provider(Secret(PW), rules=rules), Operation.GET_CUSTOM_FIELD_OPTIONS)
    assert denied.output.to_list() == ["CanStartTickets=False", "CanStartChats=False"]
    assert denied.custom_fields == []


def test_user_details_html_from_rules() -> None:
    rules = FixedRules({Operation.GET_USER_DETAILS: Decision(html="<b>Account</b>")})
    result = call(Provider(Secret(PW), rules=rules), Operation.GET_USER_DETAILS, "username=ann")
    assert result.user_info_html == "<b>Account</b>"


def test_event_stored_without_secrets_and_deduplicated() -> None:
    sink = ListSink()
    note = Notification(rule="r", channel="sms", params={"to": "+1"})
    rules = FixedRules({Operation.NOTIFY_EVENT_FIRED: Decision(notifications=[note])})
    when = datetime(2026, 1, 2, tzinfo=UTC)
    provider = Provider(Secret(PW), rules=rules, events=sink, clock=lambda: when)
    entries = ("eventType=502000", "args_Subject=Printer on fire", "loginPassword=x")
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, *entries).success
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, *entries).success
    [(event, notes)] = sink.events
    assert (event.event_type, event.event_name, event.received_at) == (502000, "Ticket Created", when)
    assert event.arguments == {"Subject": "Printer on fire"}
    assert all(name.lower() not in {"authpw", "loginpassword"} for name, _ in event.variables)
    assert notes == [note]


def test_event_with_unknown_or_missing_type() -> None:
    sink = ListSink()
    provider = Provider(Secret(PW), events=sink)
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, "eventType=999").success
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, "eventType= 2147483647 ").success
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, "eventType=").success
    assert call(provider, Operation.NOTIFY_EVENT_FIRED, "args_x=1").success
    assert [(e.event_type, e.event_name) for e, _ in sink.events] == [
        (999, None),
        (2147483647, None),
        (None, None),
        (None, None),
    ]


MALFORMED_EVENT_TYPES = [
    "²",
    "٣",
    "\uff11\uff12",
    "banana",
    "-1",
    "+5",
    "1.0",
    "2147483648",
    "9" * 30,
    "9" * 5000,
]


@pytest.mark.parametrize("op", list(Operation))
@pytest.mark.parametrize("raw", MALFORMED_EVENT_TYPES, ids=lambda raw: f"{raw[:12]}({len(raw)})")
def test_a_malformed_event_type_is_invalid_input_for_every_operation(
    op: Operation, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    rules = FixedRules()
    provider = Provider(
        Secret(PW), events=sink, rules=rules, authenticator=DictAuthenticator(users={"ann": ("pw", ANN)})
    )
    with caplog.at_level(logging.INFO, logger="provider.calls"):
        result = call(provider, op, "loginUsername=ann", "loginPassword=pw", f"eventType={raw}")
    assert (result.success, result.message) == (False, INVALID_INPUT_EVENT_TYPE)
    assert result.output.to_list() == []
    assert sink.events == [] and rules.seen == []
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "call.invalid_input"]
    assert (record.operation, record.variable) == (op.value, "eventType")
    assert raw not in caplog.text


def test_the_password_is_checked_before_the_inputs() -> None:
    result = call(Provider(Secret(PW)), Operation.NOTIFY_EVENT_FIRED, "eventType=²", password="wrong")
    assert (result.success, result.message) == (False, PERMISSION_DENIED)


def test_event_store_failure_is_success_false() -> None:
    provider = Provider(Secret(PW), events=ListSink(broken=True))
    result = call(provider, Operation.NOTIFY_EVENT_FIRED, "eventType=502000")
    assert (result.success, result.message) == (False, EVENT_NOT_STORED)


def test_logins_ask_the_authenticator_and_other_operations_the_user_lookup(
    directory: DictAuthenticator,
) -> None:
    """A disabled user is refused at sign-on at once, whatever a lookup cache still holds."""
    stale = DictAuthenticator(users={"ann": ("pw", ANN)})
    directory.users.clear()  # the account was just removed from the real store
    rules = FixedRules()
    provider = Provider(Secret(PW), authenticator=directory, user_lookup=stale, rules=rules)
    assert (
        call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=ann").output.get("Authentication")
        == "FAIL"
    )
    assert call(provider, Operation.START_CHAT, "loginUsername=ann").success
    assert rules.seen[-1][2] == ANN
    assert stale.lookups == ["ann"]


class UnreachableRules:
    """A rule evaluator whose database is down (as the stored rules' first load can be)."""

    def evaluate(
        self, operation: Operation, variables: InputVariables, identity: Identity | None
    ) -> Decision:
        raise StorageError("database error: OperationalError")


@pytest.mark.parametrize("op", [o for o in Operation if o is not Operation.AUTHENTICATE])
def test_an_unreachable_database_is_success_false_with_a_clear_message(
    op: Operation, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(
        Secret(PW), rules=UnreachableRules(), authenticator=DictAuthenticator(users={"ann": ("pw", ANN)})
    )
    with caplog.at_level(logging.ERROR, logger="provider.calls"):
        result = call(provider, op, "loginUsername=ann", "eventType=502000")
    assert (result.success, result.message) == (False, STORAGE_UNAVAILABLE)
    assert [r.operation for r in caplog.records if getattr(r, "event", None) == "storage.unavailable"] == [
        op.value
    ]


def test_a_refused_login_is_not_a_directory_error() -> None:
    """Local users are refused too: a refusal says nothing about a directory."""
    assert not issubclass(AuthenticationFailed, DirectoryError)


class RefusingLookup(DictAuthenticator):
    """An authenticator whose lookups refuse the user outright."""

    def lookup(self, username: str) -> Identity | None:
        raise AuthenticationFailed("disabled")


def test_a_refused_lookup_fails_the_sign_in_cookie_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    provider = Provider(Secret(PW), authenticator=RefusingLookup())
    with caplog.at_level(logging.INFO, logger="provider.calls"):
        result = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=ann")
    assert result.output.get("Authentication") == "FAIL"
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "login.fail"]
    assert record.reason == "disabled"
