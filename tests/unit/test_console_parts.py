"""Pure parts of the console: the age wording, the bar chart geometry, the HTTPS decision."""

from __future__ import annotations

import pytest

from provider.client_address import parse_networks
from provider.web.console.app import age_text, came_over_https
from provider.web.console.charts import PLOT_WIDTH, bar_chart


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (119, "119 seconds"),
        (120, "2 minutes"),
        (7_300, "2 hours"),
        (200_000, "2 days"),
    ],
)
def test_age_text(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_bars_are_scaled_to_the_largest_total_with_failures_inside() -> None:
    chart = bar_chart([("Authenticate", 10, 5), ("StartTicket", 5, 0)])
    first, second = chart.bars
    assert first.width == PLOT_WIDTH and first.failed_width == PLOT_WIDTH / 2
    assert second.width == PLOT_WIDTH / 2 and second.y > first.y
    assert bar_chart([]).bars == () and bar_chart([]).height > 0


def test_https_is_believed_from_a_trusted_proxy_only() -> None:
    trusted = parse_networks("10.0.0.1")
    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "wsgi.url_scheme": "http"}
    assert came_over_https({**forwarded, "REMOTE_ADDR": "10.0.0.1"}, trusted)
    assert not came_over_https({**forwarded, "REMOTE_ADDR": "10.0.0.2"}, trusted)
    assert came_over_https({"wsgi.url_scheme": "https", "REMOTE_ADDR": "10.0.0.2"}, trusted)
