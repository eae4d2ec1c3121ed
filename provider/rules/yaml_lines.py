"""YAML with line numbers, for rules files: reading (:func:`read_yaml`) and writing (:func:`dump_yaml`).

:func:`read_yaml` builds :class:`LineMapping` and :class:`LineSequence` (a ``dict`` and a
``list`` that remember the 1-based line of themselves, of each key and of each item, and
a mapping's repeated keys) so validation can name the line of every problem
(:func:`line_of`, :func:`line_at`, :func:`duplicate_keys`). Anchors and aliases
(``&x``/``*x``) are refused (they do not survive an export, and aliases can multiply a
file's size); YAML dates are read as text. :func:`dump_yaml` writes multi-line text as
``|`` blocks and never emits anchors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, NodeEvent

from provider.errors import RuleProblem, RulesFileError


class LineMapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys are (1-based lines)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int]] = []


class LineSequence(list[Any]):
    """A YAML sequence that remembers where it and each of its items are."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that records lines, refuses anchors and aliases, and keeps dates as text."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not supported in rules files",
                event.start_mark,  # type: ignore[arg-type]
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterable[LineMapping]:
    data = LineMapping(node.start_mark.line + 1)
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            data.duplicates.append((f"a key of type {type(key).__name__}", line))
            continue
        if key in data:
            data.duplicates.append((key, line))
            continue
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Iterable[LineSequence]:
    data = LineSequence(node.start_mark.line + 1)
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=True))
        data.item_lines.append(child.start_mark.line + 1)


def _construct_timestamp_as_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


def line_of(node: Any, key: Any = None) -> int | None:
    """The line of ``node`` (or of ``key`` in it); ``None`` for plain dicts and lists."""
    if key is not None and isinstance(node, LineMapping):
        return node.key_lines.get(key, node.line)
    if isinstance(key, int) and isinstance(node, LineSequence) and 0 <= key < len(node.item_lines):
        return node.item_lines[key]
    return getattr(node, "line", None)


def duplicate_keys(node: Mapping[Any, Any]) -> list[tuple[Any, int]]:
    """The keys given more than once in ``node`` (or of a type a key cannot have), with their lines."""
    return node.duplicates if isinstance(node, LineMapping) else []


def line_at(root: Any, path: Iterable[str | int]) -> int | None:
    """The line of the value at ``path`` inside ``root`` (the deepest known line)."""
    node, line = root, line_of(root)
    for step in path:
        in_mapping = isinstance(node, Mapping) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if not (in_mapping or in_list):
            break
        line = line_of(node, step)
        node = node[step]
    return line


def read_yaml(text: str) -> Any:
    """The YAML document in ``text`` with line-tracking containers; raises RulesFileError with the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or exc.context or "invalid YAML"
        raise RulesFileError([RuleProblem(message=f"invalid YAML: {message}", line=line)]) from exc
    except yaml.YAMLError as exc:
        raise RulesFileError([RuleProblem(message=f"invalid YAML: {exc}")]) from exc


def dump_yaml(data: Any, *, header: str | None = None) -> str:
    """``data`` as block YAML in the given key order, ``header`` (if any) as ``#`` comment lines first."""
    body = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    if header:
        lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return lines + body
    return body


class _Dumper(yaml.SafeDumper):
    """Writes multi-line text as ``|`` blocks; never emits anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if "'" in value and '"' not in value:
        # Expressions quote strings with '...': double quotes keep them readable.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    short = all(isinstance(v, str | int | float) and "\n" not in str(v) for v in value)
    flow = short and sum(len(str(v)) + 2 for v in value) <= 80
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)
