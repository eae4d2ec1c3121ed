"""The checks of a rules file's ``templates:`` and ``variables:`` sections.

:class:`TemplateChecks` extends the action checks (:mod:`provider.rules.action_checks`)
with the two sections; the loader's validator uses it. Every problem is collected with
its line: a template's unknown kind or parameter, a parameter that does not compile
(unknown variables and filters, at the parameter's line), an editable variable with an
invalid name, given twice (names ignore case) or with the name of a read-only one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provider.channels.registry import normalise_notify_params
from provider.channels.specs import SPECS
from provider.channels.validation import json_data
from provider.comms.templates import VARIABLE_NAME, MessageTemplate, template_params
from provider.rules.action_checks import ActionChecks, describe_type, did_you_mean
from provider.rules.context import CONTEXT_NAMES
from provider.rules.environment import CompileError, compile_text, is_json_value
from provider.rules.yaml_lines import duplicate_keys, line_at, line_of

TEMPLATE_RESERVED = ("kind", "description", "tags")


class TemplateChecks(ActionChecks):
    """Checks ``templates:`` and ``variables:``; the templates found are kept for ``notify``."""

    def variables(
        self, node: Any, line: int | None, read_only: Mapping[str, str]
    ) -> tuple[tuple[str, str], ...]:
        """The editable variables (name, value as text)."""
        if node is None:
            return ()
        if not isinstance(node, Mapping):
            self.add(f"variables must be a mapping of names to values, not {describe_type(node)}", line=line)
            return ()
        for key, dup_line in duplicate_keys(node):
            self.add(f"variable {key!r} is defined more than once", line=dup_line)
        protected = {name.lower() for name in read_only}
        seen: set[str] = set()
        out = []
        for name, value in node.items():
            key_line = line_of(node, name)
            if not isinstance(name, str) or not VARIABLE_NAME.match(name):
                self.add(
                    f"variable {name!r}: a name is letters, digits and _ (not starting with a digit)",
                    line=key_line,
                )
                continue
            if name.lower() in protected:
                self.add(
                    f"variable {name!r} is read-only (set by ST_PROVIDER_VAR_{name.upper()}); "
                    "an editable variable cannot replace it",
                    line=key_line,
                )
                continue
            if name.lower() in seen:
                self.add(f"variable {name!r} is defined more than once (names ignore case)", line=key_line)
                continue
            seen.add(name.lower())
            text = self.scalar_text(value, f"variable {name!r}", key_line, None)
            if text is not None:
                out.append((name, text))
        return tuple(out)

    def templates(self, node: Any, line: int | None) -> list[MessageTemplate]:
        """The valid templates; each is also kept in :attr:`templates_by_name`."""
        if node is None:
            return []
        if not isinstance(node, Mapping):
            self.add(f"templates must be a mapping of template names, not {describe_type(node)}", line=line)
            return []
        for key, dup_line in duplicate_keys(node):
            self.add(f"template {key!r} is defined more than once", line=dup_line)
        found = []
        for name, body in node.items():
            template = self.template(name, body, line_of(node, name))
            if template is not None:
                found.append(template)
                self.templates_by_name[template.name] = template
        return found

    def template(self, name: Any, body: Any, line: int | None) -> MessageTemplate | None:
        if not isinstance(name, str) or not name.strip():
            self.add(f"a template name must be a non-empty text, not {describe_type(name)}", line=line)
            return None
        start = len(self.problems)
        self.broken_templates.add(name)
        what = f"template {name!r}"
        if not isinstance(body, Mapping):
            self.add(f"{what} must be a mapping with at least 'kind', not {describe_type(body)}", line=line)
            return None
        for key, dup_line in duplicate_keys(body):
            self.add(f"{what}: {key!r} is given more than once", line=dup_line)
        kind = body.get("kind")
        allowed = template_params(kind) if isinstance(kind, str) else None
        if allowed is None or not isinstance(kind, str):
            self.add(
                f"{what} needs a 'kind' (one of {', '.join(SPECS)}), not {kind!r}"
                f"{did_you_mean(str(kind), SPECS)}",
                line=line_of(body, "kind") or line,
            )
            return None
        description = self.text(body, "description", None)
        tags = self.template_tags(body, what)
        raw = {k: v for k, v in body.items() if k not in TEMPLATE_RESERVED}
        for key in raw:
            if key not in allowed:
                self.add(
                    f"{what}: unknown {kind} template parameter {key!r}{did_you_mean(str(key), allowed)} "
                    f"(known: {', '.join(allowed)})",
                    line=line_of(body, key),
                )
        if not raw:
            self.add(f"{what} has no parameters (known: {', '.join(allowed)})", line=line)
        params, problems = normalise_notify_params(kind, raw)
        for problem in problems:
            self.add(f"{what}: {problem}", line=line)
        for key, value in params.items():
            if not is_json_value(value):
                self.add(
                    f"{what}: {key!r} must be text, a number, a list or a mapping", line=line_of(body, key)
                )
        template = MessageTemplate(
            name=name, kind=kind, params=json_data(params), description=description, tags=tags, line=line
        )
        if len(self.problems) == start:
            self.compile_template(template, body)
        if len(self.problems) > start:
            return None
        self.broken_templates.discard(name)
        return template

    def template_tags(self, body: Mapping[Any, Any], what: str) -> tuple[str, ...]:
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            self.add(f"{what}: tags must be a list of texts", line=line_of(body, "tags"))
            return ()
        return tuple(tags)

    def compile_template(self, template: MessageTemplate, body: Mapping[Any, Any]) -> None:
        """A problem, at its line, for each parameter of ``template`` that does not compile."""
        for path, source in _leaves((), template.params):
            try:
                compile_text(source, CONTEXT_NAMES, html=path[0] in template.html_params)
            except CompileError as exc:
                where = ".".join(str(p) for p in path)
                for problem in exc.problems:
                    self.add(
                        f"template {template.name!r}: {where}: {problem}",
                        line=line_at(body, path) or template.line,
                    )


def _leaves(path: tuple[str | int, ...], node: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """The text leaves of ``node`` with their paths."""
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, Mapping):
        return [leaf for key, value in node.items() for leaf in _leaves((*path, key), value)]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in _leaves((*path, i), value)]
    return []
