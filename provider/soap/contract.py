"""The SmarterTrack.Connector contract: one declarative description, Spyne types built from it.

SmarterTrack calls an ASMX web service through proxies generated from its
``SmarterTrack.Connector`` interfaces. This module describes those types once
(:data:`TYPES`, :data:`OPERATIONS`) in the member order .NET's XmlSerializer writes;
:mod:`provider.soap.wsdl` renders the WSDL from the same description and
:func:`build_types` / :func:`build_services` build Spyne classes from it.

Spyne fixes a class's namespace when the first :class:`~spyne.Application` is built
from it, and keeps every class it has seen for the life of the process, so the
router builds these classes once (:mod:`provider.soap.spyne_server`), for the configured
namespace; requests in other namespaces are renamed into it (see :mod:`provider.soap.router`), never given
classes of their own.

Encoding choices, measured against Spyne 2.14 and XmlSerializer:

* booleans are value types: ``minOccurs=1``, never nil, default ``false`` (Spyne would
  otherwise write ``xsi:nil`` for ``None``, which XmlSerializer rejects for ``bool``);
* strings are ``minOccurs=0``: a ``None`` string is omitted, never ``xsi:nil``;
* string lists are ``ArrayOfString`` (Spyne's default name is ``stringArray``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from spyne import Array, Boolean, ComplexModel, ServiceBase, Unicode, rpc

from provider.domain import Operation

SERVICE_NAME: Final = "ExternalProvider"
ENDPOINT_PATH: Final = "/ExternalProvider.asmx"
SOAP11_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV: Final = "http://www.w3.org/2003/05/soap-envelope"

ARRAY_OF_STRING: Final = "ArrayOfString"
FIELD_DATA: Final = "ExternalCustomFieldData"
ARRAY_OF_FIELD_DATA: Final = "ArrayOfExternalCustomFieldData"
INPUTS_PARAMETER: Final = "inputs"
INPUT_VARIABLES: Final = "InputVariables"

Kind = Literal["string", "boolean", "ArrayOfString", "ArrayOfExternalCustomFieldData"]


@dataclass(frozen=True)
class Member:
    """One member of a contract type, as XmlSerializer declares it."""

    name: str
    kind: Kind


def _result(*extra: Member) -> tuple[Member, ...]:
    return (Member("Success", "boolean"), Member("Message", "string"), *extra)


_OUTPUT = Member("OutputVariables", "ArrayOfString")
_INPUTS = (Member(INPUT_VARIABLES, "ArrayOfString"),)

TYPES: Final[Mapping[str, tuple[Member, ...]]] = MappingProxyType(
    {
        "ExternalLoginProviderInputs": _INPUTS,
        "ExternalLoginProviderResult": _result(_OUTPUT),
        "ExternalCustomFieldProviderInputs": _INPUTS,
        "ExternalCustomFieldProviderResult": _result(
            Member("CustomFieldDataItems", "ArrayOfExternalCustomFieldData"), _OUTPUT
        ),
        FIELD_DATA: (
            Member("CustomFieldName", "string"),
            Member("DisplayWithInformationLookup", "boolean"),
            Member("ChangeListOptions", "boolean"),
            Member("ListOptions", "ArrayOfString"),
            Member("ChangeRequired", "boolean"),
            Member("NewRequiredValue", "boolean"),
            Member("ChangeVisible", "boolean"),
            Member("NewVisibleValue", "boolean"),
        ),
        "ExternalTicketProviderInputs": _INPUTS,
        "ExternalTicketProviderResult": _result(_OUTPUT),
        "ExternalChatProviderInputs": _INPUTS,
        "ExternalChatProviderResult": _result(_OUTPUT),
        "ExternalUserInfoProviderInputs": _INPUTS,
        "ExternalUserInfoProviderResult": _result(Member("UserInfoHtml", "string"), _OUTPUT),
        "ExternalEventProviderInputs": _INPUTS,
        "ExternalEventProviderResult": _result(),
    }
)


@dataclass(frozen=True)
class OperationSpec:
    """One web method: ``<Op>(inputs: <inputs>) -> <Op>Result: <result>``."""

    operation: Operation
    inputs: str
    result: str

    @property
    def name(self) -> str:
        return str(self.operation)

    @property
    def response(self) -> str:
        return f"{self.operation}Response"

    @property
    def result_element(self) -> str:
        return f"{self.operation}Result"


OPERATIONS: Final[tuple[OperationSpec, ...]] = (
    OperationSpec(Operation.AUTHENTICATE, "ExternalLoginProviderInputs", "ExternalLoginProviderResult"),
    OperationSpec(
        Operation.GET_SIGN_IN_COOKIE_INFO, "ExternalLoginProviderInputs", "ExternalLoginProviderResult"
    ),
    OperationSpec(
        Operation.GET_CUSTOM_FIELD_OPTIONS,
        "ExternalCustomFieldProviderInputs",
        "ExternalCustomFieldProviderResult",
    ),
    OperationSpec(Operation.START_TICKET, "ExternalTicketProviderInputs", "ExternalTicketProviderResult"),
    OperationSpec(Operation.START_CHAT, "ExternalChatProviderInputs", "ExternalChatProviderResult"),
    OperationSpec(
        Operation.GET_USER_DETAILS, "ExternalUserInfoProviderInputs", "ExternalUserInfoProviderResult"
    ),
    OperationSpec(Operation.NOTIFY_EVENT_FIRED, "ExternalEventProviderInputs", "ExternalEventProviderResult"),
)

OPERATION_NAMES: Final[frozenset[str]] = frozenset(spec.name for spec in OPERATIONS)


def soap_action(namespace: str, operation: str) -> str:
    """The SOAPAction ASMX declares: the namespace, a ``/`` if it has none, the operation."""
    return f"{namespace}{'' if namespace.endswith('/') else '/'}{operation}"


# --- Spyne classes -----------------------------------------------------------------


@dataclass(frozen=True)
class ContractTypes:
    """The Spyne classes of one namespace, by contract type name."""

    namespace: str
    classes: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.classes[name]

    @property
    def field_data(self) -> Any:
        return self.classes[FIELD_DATA]


def build_types(namespace: str) -> ContractTypes:
    """Fresh Spyne classes for every contract type, in ``namespace``.

    Spyne never frees them: call this once per process and namespace, not per request.
    """
    strings = Array(Unicode, type_name=ARRAY_OF_STRING).customize(__namespace__=namespace)
    spyne_kind: dict[str, Any] = {
        "string": Unicode(min_occurs=0, nillable=False),
        "boolean": Boolean(min_occurs=1, nillable=False, default=False),
        "ArrayOfString": strings,
    }
    classes: dict[str, Any] = {ARRAY_OF_STRING: strings}

    def complex_type(name: str) -> Any:
        members = [(m.name, spyne_kind[m.kind]) for m in TYPES[name]]
        return type(name, (ComplexModel,), {"__namespace__": namespace, "_type_info": members})

    classes[FIELD_DATA] = complex_type(FIELD_DATA)
    field_array = Array(classes[FIELD_DATA], type_name=ARRAY_OF_FIELD_DATA).customize(__namespace__=namespace)
    classes[ARRAY_OF_FIELD_DATA] = field_array
    spyne_kind["ArrayOfExternalCustomFieldData"] = field_array
    for name in TYPES:
        if name not in classes:
            classes[name] = complex_type(name)
    return ContractTypes(namespace=namespace, classes=MappingProxyType(classes))


Invoke = Callable[[OperationSpec, Any, ContractTypes, Any], Any]
"""``invoke(spec, inputs, types, call)``: answer one call.

``inputs`` is the decoded ``*Inputs`` object (or ``None``), ``call`` is the
per-request state the transport put in Spyne's ``ctx.udc``. Returns the ``*Result``
object to serialise; must not raise (the transport owns fault handling).
"""


def build_services(types: ContractTypes, invoke: Invoke) -> list[type[ServiceBase]]:
    """One Spyne service class with the seven web methods, bound to ``types``' namespace.

    Each method hands its input to ``invoke`` and returns what it returns.
    """
    namespace: dict[str, Any] = {"__service_name__": SERVICE_NAME}
    for spec in OPERATIONS:
        namespace[spec.name] = _method(spec, types, invoke)
    service = type(SERVICE_NAME, (ServiceBase,), namespace)
    return [service]


def _method(spec: OperationSpec, types: ContractTypes, invoke: Invoke) -> Any:
    def method(ctx: Any, inputs: Any) -> Any:
        return invoke(spec, inputs, types, ctx.udc)

    method.__name__ = spec.name
    method.__qualname__ = f"{SERVICE_NAME}.{spec.name}"
    # Spyne takes the parameter name ("inputs") from the function's signature.
    return rpc(
        types[spec.inputs],
        _returns=types[spec.result],
        _body_style="wrapped",
        _operation_name=spec.name,
        _in_message_name=spec.name,
        _out_message_name=spec.response,
        _out_variable_name=spec.result_element,
    )(method)
