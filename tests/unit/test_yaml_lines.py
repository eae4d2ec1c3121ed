"""YAML with line numbers (rules files) and the one copy-to-JSON-data function the loader shares."""

from __future__ import annotations

import pytest

from provider.channels.validation import json_data
from provider.errors import RulesFileError
from provider.rules.yaml_lines import LineMapping, dump_yaml, duplicate_keys, line_at, line_of, read_yaml

TEXT = """\
top:
  a: 1
  list:
    - x
    - {b: 2}
  a: 3
"""


def test_lines_of_keys_items_and_repeated_keys() -> None:
    data = read_yaml(TEXT)
    assert isinstance(data, LineMapping)
    assert line_of(data, "top") == 1
    assert line_of(data["top"], "list") == 3
    assert line_at(data, ("top", "list", 1, "b")) == 5
    assert line_at(data, ("top", "missing", 0)) == 1  # the deepest known line
    assert duplicate_keys(data["top"]) == [("a", 6)]
    assert data["top"]["a"] == 1


def test_anchors_are_refused_with_their_line() -> None:
    with pytest.raises(RulesFileError) as caught:
        read_yaml("a: &x 1\nb: *x\n")
    assert caught.value.problems[0].line == 1


def test_json_data_copies_line_tracking_containers_to_plain_ones() -> None:
    plain = json_data(read_yaml("m: {429: 60, x: [1, {y: true}]}\n"))
    assert plain == {"m": {"429": 60, "x": [1, {"y": True}]}}
    assert type(plain) is dict and type(plain["m"]) is dict and type(plain["m"]["x"]) is list
    with pytest.raises(ValueError):
        json_data({"a": {1, 2}})
    with pytest.raises(ValueError):
        json_data({True: 1})


def test_dump_yaml_writes_a_header_and_blocks_for_multi_line_text() -> None:
    text = dump_yaml({"a": "one\ntwo\n", "b": [1, 2]}, header="made by\n\nthe test")
    assert text.startswith("# made by\n#\n# the test\n")
    assert "a: |\n  one\n  two\n" in text
    assert "b: [1, 2]\n" in text
    assert read_yaml(text) == {"a": "one\ntwo\n", "b": [1, 2]}
