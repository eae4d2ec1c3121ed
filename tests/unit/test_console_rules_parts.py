"""Pure parts of the console's rules editor: the what-if difference as rows a reader can follow."""

from __future__ import annotations

from provider.web.console.rules_views import whatif_changes


def test_whatif_changes_lists_each_difference_with_before_and_after() -> None:
    diff = {
        "message": ["Tickets are closed", "Ticket Creation Successful"],
        "success": [False, True],
        "output": {
            "added": {"Tier": "gold"},
            "removed": {"Old": "x"},
            "changed": {"TicketCreation": ["FALSE", "TRUE"]},
        },
        "notifications": {
            "added": [{"rule": "r", "channel": "hook", "params": {"text": "new ticket T-7"}}],
            "dropped": [{"rule": "r", "channel": "hook", "params": {"text": "ticket T-7"}}],
        },
    }
    assert whatif_changes(diff) == [
        ("Success", "false", "true"),
        ("Message", "Tickets are closed", "Ticket Creation Successful"),
        ("output Tier", None, "gold"),
        ("output Old", "x", None),
        ("output TicketCreation", "FALSE", "TRUE"),
        ("notification", None, 'hook (rule r): {"text": "new ticket T-7"}'),
        ("notification", 'hook (rule r): {"text": "ticket T-7"}', None),
    ]


def test_no_difference_is_no_row() -> None:
    assert whatif_changes({}) == []
