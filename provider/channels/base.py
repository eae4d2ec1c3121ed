"""The Channel plug-in: one outbound destination (a partner API, a webhook, SMTP).

A channel is built from its configured settings (the ``channels:`` section of a
rules file, ``${VAR}`` references already resolved) and sends one rendered
notification at a time. It never sleeps or retries by itself: it raises
:class:`~provider.errors.ChannelError` describing the failure (``final``,
``status``, ``retry_after``, ``pause_channel``) and the worker decides when to try
again. Every network call has a timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SendResult:
    """A successful delivery.

    ``partner_id`` is the partner's message id (SMS ``messageSid``, a SmartCOMM job
    id, ...); ``status`` the HTTP status; ``documents`` what the partner generated and
    must be kept with the delivery (SmartCOMM base64 output per channel).
    """

    partner_id: str | None = None
    status: int | None = None
    detail: str | None = None
    documents: Mapping[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """Sends rendered notifications to one destination."""

    #: the channel type as written in rules files (``uniphore-sms``, ``smartcomm``, ...)
    type_name: str

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """Deliver one notification; ``delivery_key`` is stable across retries.

        Raises ChannelError on failure; the caller records the attempt and schedules
        the next one (or ends the delivery when ``final``).
        """
        ...

    def close(self) -> None:
        """Release connections (called when channel settings change or the worker stops)."""
        ...
