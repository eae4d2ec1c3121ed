"""What the help page says about each operation: a sentence and the input variables the seed documents.

This is documentation data only (SmarterTrack's External Provider documentation, seed 004): the
sample envelopes themselves are generated from :mod:`provider.soap.contract`, never written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from provider.domain import Operation


@dataclass(frozen=True)
class Variable:
    """One ``name=value`` input variable: its name, the sample's placeholder value, its meaning."""

    name: str
    placeholder: str
    meaning: str


@dataclass(frozen=True)
class OperationDoc:
    """The help page's text for one operation."""

    summary: str
    variables: tuple[Variable, ...]


_AUTH_PW = Variable("authPW", "string", "The Web Service Password: shows the caller is SmarterTrack.")
_LOGIN = Variable("loginUsername", "string", "The username of the person signing in or asking.")
_DEPARTMENT = Variable("departmentName", "string", "The department chosen.")
_EMAIL_FROM = Variable("emailFrom", "string", "The sender's address, for items that arrived by email.")
_CUSTOM = Variable("cf_name", "string", "The current value of each custom field (cf_ and its name).")

DOCS: Final[Mapping[Operation, OperationDoc]] = MappingProxyType(
    {
        Operation.AUTHENTICATE: OperationDoc(
            "Checks a username and password when someone signs in to SmarterTrack.",
            (_AUTH_PW, _LOGIN, Variable("loginPassword", "string", "The password typed at sign-in.")),
        ),
        Operation.GET_SIGN_IN_COOKIE_INFO: OperationDoc(
            "Like Authenticate, for a person already signed in by cookie: no password is checked.",
            (_AUTH_PW, _LOGIN),
        ),
        Operation.GET_CUSTOM_FIELD_OPTIONS: OperationDoc(
            "Decides whether tickets and chats may be started and adjusts custom fields before the form.",
            (
                _AUTH_PW,
                _LOGIN,
                _DEPARTMENT,
                Variable("location", "string", "PRE (after the department is chosen) or REGULAR."),
                _CUSTOM,
            ),
        ),
        Operation.START_TICKET: OperationDoc(
            "Called when a ticket is submitted: may refuse it or set custom fields and the department.",
            (
                _AUTH_PW,
                _LOGIN,
                _EMAIL_FROM,
                _DEPARTMENT,
                Variable("subject", "string", "The ticket's subject."),
                Variable("ticketNumber", "string", "The number of the ticket about to be created."),
                _CUSTOM,
            ),
        ),
        Operation.START_CHAT: OperationDoc(
            "Called when a live chat is started: may refuse it or set custom fields and the department.",
            (_AUTH_PW, _LOGIN, _EMAIL_FROM, _DEPARTMENT, _CUSTOM),
        ),
        Operation.GET_USER_DETAILS: OperationDoc(
            "Returns the HTML shown to agents above a ticket's conversation.",
            (
                _AUTH_PW,
                Variable("username", "string", "The account the information is for."),
                Variable("email", "string", "The email address of that account."),
                Variable("brandName", "string", "The brand the ticket was created in."),
                _DEPARTMENT,
                Variable("groupName", "string", "The group the ticket was created in."),
                Variable("ticketNumber", "string", "The ticket the information is for."),
                Variable("interactionType", "string", "Where the call is made from."),
            ),
        ),
        Operation.NOTIFY_EVENT_FIRED: OperationDoc(
            "Told when a SmarterTrack event with the Notify External Provider action fires.",
            (
                _AUTH_PW,
                Variable("eventType", "int", "The event's numeric type (for example 501000)."),
                Variable("args_key", "string", "Each argument of the event (args_ and its name)."),
            ),
        ),
    }
)
