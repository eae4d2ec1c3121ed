"""The console's navigation: a page is added here (its link) and in :mod:`.views` (its route)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """A navigation entry: the Flask endpoint and its accessible link name."""

    endpoint: str
    label: str


PAGES: tuple[Page, ...] = (
    Page("console.overview", "Overview"),
    Page("console.rules", "Rules"),
    Page("console.templates", "Templates"),
    Page("console.test_call", "Test a call"),
    Page("console.directory", "Directory"),
    Page("console.calls", "Calls"),
    Page("console.events", "Events"),
    Page("console.deliveries", "Deliveries"),
)
