"""Fixtures shared by the integration tests that run the event worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provider.events.worker import Worker


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers made by the test; closed (their channels' connections too) afterwards."""
    made: list[Worker] = []
    yield made
    for w in made:
        w.close()
