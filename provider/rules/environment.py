"""The sandboxed Jinja2 environments rules are written in.

Conditions (``when``) are Jinja2 expressions and ``then`` values are Jinja2 templates,
both compiled once in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
(never ``eval``) with :class:`~jinja2.StrictUndefined`, so a missing key raises and
the engine skips the rule instead of guessing. HTML (``html``) is rendered in a second
environment with autoescaping: every value is escaped, the template text is not.

What admins get beyond Jinja's built-ins (``lower``, ``upper``, ``in``, ``default`` ...):

* tests ``matching(regex)`` (``regex.search``), ``startingwith(text)``, ``endingwith(text)``,
  ``opted_out(kind=None)`` (the suppression list, :mod:`provider.rules.optout_test`);
* filters ``regex_search(regex, group=0)`` (the match or ``""``),
  ``regex_replace(regex, replacement)`` and ``split(separator=None)``.

Every evaluation is bounded (:mod:`provider.rules.limits`): a deadline per call checked
inside the evaluation (calls, filters, tests, operators, loop iterations, ``range``,
output), the rendered size of each template, the size of every text or list an
operation builds (checked before building it: ``*``, ``+``, ``~``, ``%``, ``join``,
``center``, ``format`` ...), integers from ``*`` and ``**``, and regular expressions
(the ``regex`` module, with the time left as its timeout). ``lipsum`` is not available.

Compilation also checks what Jinja only finds at run time: unknown filters and tests,
names that are not in the call context (with a "did you mean" hint), and regular
expressions given as constants. :class:`CompileError` lists every problem found.
"""

from __future__ import annotations

import difflib
import inspect
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from contextvars import Token
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import missing

from provider.errors import RuleError, RuleLimitExceeded
from provider.rules import limits
from provider.rules.checked import REPLACED_FILTERS, RULES_TESTS, call_checked, checked_filter, checked_test
from provider.rules.context import CaseInsensitiveDict
from provider.rules.limits import ACTIVE, DEFAULT_LIMITS, Budget, RuleLimits, current
from provider.rules.optout_test import test_opted_out

REGEX_FILTERS = frozenset({"regex_search", "regex_replace"})
REGEX_TESTS = frozenset({"matching"})
# Nodes that change a context (variables or the autoescape state): such templates get their own.
_ASSIGNING_NODES = (
    nodes.Assign,
    nodes.AssignBlock,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Import,
    nodes.FromImport,
    nodes.EvalContextModifier,
)
#: Read-only methods of the context's mappings that skip the sandbox's per-call checks.
TRUSTED_READS = frozenset({"get", "keys", "values", "items"})


class CompileError(RuleError):
    """An expression or template is invalid; ``problems`` lists why (one line each)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class _RulesCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop and every ``~`` going through the limits."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("checked_iter"), [node.iter], [], None, None, lineno=node.lineno
        )
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"  # as Jinja's own visit_Concat decides
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write(f"environment.checked_concat({markup}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _CheckedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing fields (widths, values) that make it too long."""

    def __init__(self, env: Any, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._budget = current()
        self._total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._total += limits.format_spec_size(format_spec, value, self._budget)
        self._budget.allow_text(self._total)
        return super().format_field(value, format_spec)


class _CheckedEscapeFormatter(_CheckedFormatter, SandboxedEscapeFormatter):
    pass


class RulesEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the rules' tests and filters, every evaluation bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _RulesCodeGenerator
    checked_iter = staticmethod(limits.checked_iter)
    checked_concat = staticmethod(limits.checked_concat)
    # The join of macro, call-block and {% set %} buffers.
    concat = staticmethod(limits.checked_buffer_join)

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=True,
            finalize=_finalize,
        )
        self.globals["range"] = limits.checked_range
        self.globals.pop("lipsum", None)
        self.filters.update(REPLACED_FILTERS)
        self.filters = {name: checked_filter(f) for name, f in self.filters.items()}
        self.tests.update(RULES_TESTS)
        self.tests["opted_out"] = test_opted_out
        self.tests = {name: checked_test(cast(Callable[..., Any], t)) for name, t in self.tests.items()}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Fast path for the read-only lookups rules make all the time (cf.get(...)):
        # the context's own mappings, whose read methods are known to be safe.
        if type(obj) is CaseInsensitiveDict and attribute in TRUSTED_READS:
            return getattr(obj, attribute)
        current().check_time()
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if type(owner) is CaseInsensitiveDict and getattr(__obj, "__name__", None) in TRUSTED_READS:
            return __obj(*args, **kwargs)
        if not __self.is_safe_callable(__obj):
            return super().call(__context, __obj, *args, **kwargs)  # raises SecurityError
        return call_checked(__context, __obj, args, kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return limits.binop(operator, self.binop_table[operator], left, right)

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text = value.__self__
        formatter: SandboxedFormatter
        if hasattr(text, "__html__"):
            formatter = _CheckedEscapeFormatter(self, escape=text.escape)
        else:
            formatter = _CheckedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            result: str = type(text)(formatter.vformat(text, args, kwargs))
            return result

        return checked


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` output: the deadline, and its text counted before it is made."""
    budget = ACTIVE.get()
    if time.monotonic() > budget.deadline:
        budget.check_time()
    if type(value) is str:
        budget.charge(len(value))
    else:
        budget.charge(budget.measure(value))
    return value


TEXT_ENV = RulesEnvironment(autoescape=False)
HTML_ENV = RulesEnvironment(autoescape=True)


class _Variables(dict[str, Any]):
    """A scope's variables; a missing name is Jinja's ``missing`` (not a KeyError)."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        return missing


class _SharedContext(Context):
    """The context conditions and assignment-free templates share in one call.

    Nothing is ever stored in its own ``vars`` (conditions return their value; templates
    that assign get a context of their own), so a name resolves straight from the scope's
    variables: ``resolve_or_missing`` is their C-level ``__getitem__``, not a Python method.
    """

    def __init__(self, environment: RulesEnvironment, variables: _Variables) -> None:
        super().__init__(environment, variables, None, {})
        self.resolve_or_missing = variables.__getitem__  # type: ignore[method-assign,assignment]


class Scope:
    """One call's variables, shared (read-only) by every condition and template of it.

    Jinja's globals, then the call context over them, built once per call. Conditions
    share one Jinja context (an expression can only assign its own ``result``);
    each template gets a fresh one, so a ``{% set %}`` never leaks into another rule.
    ``budget`` bounds everything evaluated in this scope (its deadline starts now).
    """

    __slots__ = ("_condition_context", "_html_context", "budget", "variables")

    def __init__(self, context: Mapping[str, Any], limits: RuleLimits = DEFAULT_LIMITS) -> None:
        variables = _Variables(TEXT_ENV.globals)
        variables.update(context)
        self.variables = variables
        self.budget = Budget(limits)
        self._condition_context: Context = _SharedContext(TEXT_ENV, variables)
        self._html_context: Context | None = None

    def enter(self) -> Token[Budget] | None:
        """Make this scope's budget the active one; the token to :meth:`leave` with, if it was not."""
        if current() is self.budget:
            return None
        return limits.activate(self.budget)

    @staticmethod
    def leave(token: Token[Budget] | None) -> None:
        if token is not None:
            limits.deactivate(token)

    def within(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` with this scope's budget active."""
        token = self.enter()
        try:
            return func(*args)
        finally:
            self.leave(token)

    def condition_context(self) -> Context:
        return self._condition_context

    def template_context(self, env: RulesEnvironment, *, shared: bool) -> Context:
        """A context for one template; ``shared`` for templates that assign nothing."""
        if not shared:
            return Context(env, self.variables, None, {})
        if env is TEXT_ENV:
            return self._condition_context
        if self._html_context is None:
            self._html_context = _SharedContext(env, self.variables)
        return self._html_context


class Condition:
    """A compiled ``when`` expression. Calling it with a :class:`Scope` returns its value.

    Equivalent to ``ImmutableSandboxedEnvironment.compile_expression(source,
    undefined_to_none=False)``, but evaluated in the call's shared :class:`Scope`
    instead of copying every variable into a new context per expression (several
    times faster with many rules), and as a plain function returning the value where
    Jinja's code for it has the expected shape (:func:`_plain_function`; else Jinja's
    generator, storing ``result``). Raises whatever the expression raises, and
    RuleLimitExceeded when the scope's budget runs out (its deadline is checked first).
    """

    __slots__ = ("_evaluate", "_render", "source")

    def __init__(
        self, source: str, template: Template, plain: Callable[[Context], Any] | None = None
    ) -> None:
        self.source = source
        self._render = template.root_render_func
        self._evaluate = plain if plain is not None else self._generated

    @property
    def function(self) -> Callable[[Context], Any]:
        """The expression's value for a context, without the deadline check of a call
        (for the engine, which checks it itself with the scope's budget active)."""
        return self._evaluate

    def _generated(self, context: Context) -> Any:
        for _ in self._render(context):
            pass
        return context.vars.pop("result")

    def __call__(self, scope: Scope) -> Any:
        budget = scope.budget
        if time.monotonic() > budget.deadline:
            budget.check_time()
        if ACTIVE.get() is not budget:  # called outside RuleSet.evaluate
            return scope.within(self, scope)
        return self._evaluate(scope.condition_context())


# Jinja's code for ``{% set result = <expression> %}``: a generator storing the value.
_GENERATOR_LINE = "    if 0: yield None\n"
_STORE_LINES = "    context.vars['result'] = l_0_result\n    context.exported_vars.add('result')\n"


def _plain_function(ast: nodes.Template, env: RulesEnvironment) -> Callable[[Context], Any] | None:
    """The condition's code (the same sandboxed code Jinja generates) as a function that
    returns the value instead of a generator storing it, or ``None`` when the generated
    code does not have exactly that expected shape (the generator is used then)."""
    code = env.compile(ast, raw=True)
    if code.count(_GENERATOR_LINE) != 1 or code.count(_STORE_LINES) != 1:
        return None
    code = code.replace(_GENERATOR_LINE, "").replace(_STORE_LINES, "    return l_0_result\n")
    namespace: dict[str, Any] = {"environment": env, "__file__": "<template>"}
    exec(compile(code, "<template>", "exec"), namespace)  # noqa: S102 - Jinja's own generated code
    root = namespace.get("root")
    if not inspect.isfunction(root) or inspect.isgeneratorfunction(root):
        return None
    return cast(Callable[[Context], Any], root)


class TextTemplate:
    """A compiled ``then`` value. Text without Jinja syntax is kept as a literal."""

    __slots__ = ("_env", "_render", "_shared", "source")

    def __init__(self, source: str, template: Template | None, *, assigns: bool = True) -> None:
        self.source = source
        self._render = template.root_render_func if template is not None else None
        self._env = template.environment if template is not None else None
        # A template without {% set %}, macros or imports cannot change its context: it
        # may render in the call's shared one.
        self._shared = not assigns

    @property
    def is_literal(self) -> bool:
        return self._render is None

    def render(self, scope: Scope) -> str:
        """The rendered text; raises whatever the template raises (the engine catches it).

        RuleLimitExceeded when the text grows beyond the scope's ``max_output`` (counted
        while rendering, so it stops there) or the scope's budget runs out.
        """
        if self._render is None or not isinstance(self._env, RulesEnvironment):
            return self.source
        budget = scope.budget
        if ACTIVE.get() is not budget:  # called outside RuleSet.evaluate
            result: str = scope.within(self.render, scope)
            return result
        limit = budget.limits.max_output
        parts: list[str] = []
        total = 0
        for part in self._render(scope.template_context(self._env, shared=self._shared)):
            total += len(part)
            if total > limit:
                raise RuleLimitExceeded("output", f"a rendered text longer than {limit} characters")
            parts.append(part)
        return "".join(parts)


def has_jinja_syntax(source: str) -> bool:
    return "{{" in source or "{%" in source or "{#" in source


def _static_problems(ast: nodes.Template, env: RulesEnvironment, known_names: Collection[str]) -> list[str]:
    problems: list[str] = []
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        name = node.name
        registry: Mapping[str, Any] = env.filters if isinstance(node, nodes.Filter) else env.tests
        kind = "filter" if isinstance(node, nodes.Filter) else "test"
        if name not in registry:
            problems.append(f"unknown {kind} {name!r}{_hint(name, registry)}")
            continue
        regex_names = REGEX_FILTERS if isinstance(node, nodes.Filter) else REGEX_TESTS
        if name in regex_names and node.args and isinstance(node.args[0], nodes.Const):
            pattern = node.args[0].value
            if isinstance(pattern, str):
                error = limits.compile_check(pattern)
                if error is not None:
                    problems.append(f"invalid regular expression {pattern!r} in {name}: {error}")
    if problems:
        return problems  # the variable analysis needs every filter and test to exist
    try:
        undeclared = meta.find_undeclared_variables(ast)
    except TemplateError as exc:
        return [_syntax_problem(exc)]
    allowed = set(known_names) | set(env.globals)
    for name in sorted(undeclared - allowed):
        problems.append(f"unknown variable {name!r}{_hint(name, allowed)}")
    return problems


def _hint(name: str, candidates: Iterable[str]) -> str:
    options = list(candidates)
    folded = {c.lower(): c for c in options}
    if name.lower() in folded:
        return f" (did you mean {folded[name.lower()]!r}?)"
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _syntax_problem(exc: TemplateError) -> str:
    lineno = getattr(exc, "lineno", None)
    where = f" (line {lineno} of the text)" if lineno and lineno > 1 else ""
    return f"{exc.message or type(exc).__name__}{where}"


def compile_condition(source: str, known_names: Collection[str]) -> Condition:
    """Compile a ``when`` expression; raises :class:`CompileError` listing every problem."""
    env = TEXT_ENV
    try:
        parser = Parser(env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise CompileError([f"unexpected {parser.stream.current.value!r} after the expression"])
        ast = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)], lineno=1)
        ast.set_environment(env)
    except TemplateError as exc:
        raise CompileError([_syntax_problem(exc)]) from exc
    template = _checked_template(ast, env, known_names)
    return Condition(source, template, _plain_function(ast, env))


def _checked_template(ast: nodes.Template, env: RulesEnvironment, known_names: Collection[str]) -> Template:
    """The compiled template of a parsed ``ast``, once its static checks pass (else CompileError)."""
    problems = _static_problems(ast, env, known_names)
    if problems:
        raise CompileError(problems)
    try:
        template: Template = env.from_string(ast)
    except TemplateError as exc:
        raise CompileError([_syntax_problem(exc)]) from exc
    return template


def compile_text(source: str, known_names: Collection[str], *, html: bool = False) -> TextTemplate:
    """Compile a ``then`` template; raises :class:`CompileError` listing every problem."""
    if not has_jinja_syntax(source):
        return TextTemplate(source, None)
    env = HTML_ENV if html else TEXT_ENV
    try:
        ast = env.parse(source)
    except TemplateError as exc:
        raise CompileError([_syntax_problem(exc)]) from exc
    template = _checked_template(ast, env, known_names)
    assigns = any(True for _ in ast.find_all(_ASSIGNING_NODES))
    return TextTemplate(source, template, assigns=assigns)


def is_json_value(value: Any) -> bool:
    """Whether ``value`` is made only of str, int, float, bool, None, lists and str-keyed dicts."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(is_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v) for k, v in value.items())
    return False


__all__ = [
    "HTML_ENV",
    "TEXT_ENV",
    "CompileError",
    "Condition",
    "RulesEnvironment",
    "Scope",
    "TextTemplate",
    "compile_condition",
    "compile_text",
    "has_jinja_syntax",
    "is_json_value",
]
