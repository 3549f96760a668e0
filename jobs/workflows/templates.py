"""Jinja2 templates inside workflow steps: sandboxed, strict, and type-preserving.

Three rules a reader must not break:

- **Sandboxed.** Workflow files come from chat users, so templates run in Jinja's immutable
  sandbox: no dunder attributes, no calling `list.append` on the run's own state.
- **Strict.** An unknown variable is an error naming the step, the key and the dotted variable
  (`steps.find.outptu`), never an empty string that silently reaches a client.
- **Bounded.** Every value a template builds, every loop and every render has a size, number,
  step and time limit (`jobs.workflows.sandbox`); going past one is a `TemplateError` naming the
  step, at run time, and a refusal at `apply` when the expression is constant.
- **Types survive.** A string that is exactly one `{{ expression }}` evaluates to the
  expression's Python value (a list for `foreach`, a bool for `when`, an int for a tool
  argument); text around the braces renders a string.

Secrets reach templates as a `SecretsView`, which records the names a run read so the caller can
`redact` those values from logs, outputs and error messages.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import StrictUndefined, Undefined

from jobs.workflows import sandbox

REDACTED = "[secret]"

_MARKERS = ("{{", "{%", "{#")
_FALSE_WORDS = frozenset({"", "false", "no", "off", "0", "none", "null"})


class TemplateError(Exception):
    """A template failed while a step ran; one line naming the step, the key and the problem.

    `variable` is set when the problem is an unknown variable (its full dotted name as far as it
    can be told); `problem` holds any other reason (a sandbox violation, a type error).
    """

    def __init__(self, step: str, key: str, variable: str | None = None, *, problem: str | None = None) -> None:
        self.step = step
        self.key = key
        self.variable = variable
        self.problem = problem if problem is not None else f"unknown variable '{variable}'"
        super().__init__(f"step '{step}': {key}: {self.problem}")


class _Environment(sandbox.BoundedEnvironment):
    """The one environment every workflow template runs in (strict, bounded, no autoescape,
    exact text)."""

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,  # a prompt written as a YAML block keeps its last newline
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `inputs.items` or `item.keys` must mean the key, not the dict method of that name.
        if isinstance(obj, Mapping) and not isinstance(obj, SecretsView) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment()


class SecretsView(Mapping[str, str]):
    """The workspace's secrets as templates see them (`{{ secrets.NAME }}`).

    Reading a value records its name in `used`, so a run can redact exactly what it touched.
    Its repr shows names only: printing the view (or `{{ secrets }}`) never leaks a value.
    A secret whose name clashes with a mapping method (`items`, `get`, ...) is read as
    `{{ secrets['items'] }}`.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._used: set[str] = set()

    def __getitem__(self, name: str) -> str:
        value = self._values[name]
        self._used.add(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<secrets: {', '.join(sorted(self._values)) or 'none'}>"

    __str__ = __repr__

    @property
    def used(self) -> frozenset[str]:
        """Names of the secrets read so far."""
        return frozenset(self._used)

    def used_values(self) -> list[str]:
        """Values of the secrets read so far: what `redact` must remove from this run's text."""
        return [self._values[name] for name in sorted(self._used)]

    def redact(self, text: str) -> str:
        """`text` with every secret value (used or not) replaced by a marker."""
        return redact(text, self._all_values())

    def _all_values(self) -> list[str]:
        # Error messages are redacted with every value, read or not: a failed lookup can echo
        # a value (`{{ x[secrets.TOKEN] }}`) before the read is what the run meant to do.
        return list(self._values.values())


def render(value: Any, context: Mapping[str, Any], *, step: str, key: str) -> Any:
    """Render every template string inside `value` (recursing into dicts and lists).

    A string that is exactly one `{{ expression }}` (whitespace around allowed) returns the
    expression's native value; any other string with template syntax renders to text; strings
    without template syntax and non-strings come back unchanged. `key` names where the value sits
    in the step (`args.min_days`) for the error message. Raises `TemplateError`.
    """
    if isinstance(value, str):
        return _render_text(value, context, step=step, key=key)
    if isinstance(value, Mapping):
        return {k: render(v, context, step=step, key=f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context, step=step, key=f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def check(text: str) -> str | None:
    """Why `text` cannot be a workflow template (one line, saying what kind of problem), or None.

    A syntax error, or an expression that uses no variable and already breaks a limit
    (`{{ 'a' * 10**9 }}`, `{{ 9**9**9 }}`): what `workflow apply` refuses. Such expressions are
    evaluated here inside the sandbox's bounds, so the check itself stays fast; an expression the
    bounds stop for being slow rather than big is left to fail at run time.
    """
    problem = check_syntax(text)
    if problem is not None:
        return f"template syntax error: {problem}"
    if not _has_template(text):
        return None
    try:
        tree = _ENV.parse(text)
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        with sandbox.budget():
            for node in _constant_expressions(tree, assigned):
                try:
                    sandbox.expression(_ENV, node)()
                except sandbox.BudgetError:
                    raise
                except sandbox.LimitError as exc:
                    return f"exceeds a template limit: {exc}"
                except Exception:  # noqa: S112 - any other failure is the run's to report, with its data
                    continue
    except sandbox.BudgetError:
        return None
    except RecursionError:
        return "template syntax error: nested too deeply"
    return None


def check_syntax(text: str) -> str | None:
    """Why `text` is not a valid template (one line), or None when it is.

    Catches what Jinja can know before running: unbalanced braces, bad expressions, unknown
    filters and tests. Used when a definition is loaded, so a typo fails at `workflow apply`
    rather than at 9:00 on Monday.
    """
    if not _has_template(text):
        return None
    try:
        _template(text)
    except TemplateSyntaxError as exc:
        line = f" (line {exc.lineno})" if "\n" in text.strip() else ""
        return f"{exc.message}{line}"
    except RecursionError:  # Jinja's parser and compiler recurse once per level of nesting
        return "nested too deeply"
    return None


def single_expression(text: str) -> str | None:
    """The expression source when `text` is exactly one `{{ expression }}`, else None.

    This is the rule that decides whether a value keeps its type; `when`, `if` and `foreach`
    must satisfy it, because text around braces would always be a (truthy) string.
    """
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    try:
        tokens = [(kind, value) for _, kind, value in _ENV.lex(stripped)]
    except TemplateSyntaxError:
        return None
    kinds = [kind for kind, _ in tokens]
    if kinds[0] != "variable_begin" or kinds[-1] != "variable_end" or kinds.count("variable_begin") != 1:
        return None
    if any(kind in ("data", "block_begin", "comment_begin", "raw_begin") for kind in kinds):
        return None
    inner = stripped[len(tokens[0][1]) : len(stripped) - len(tokens[-1][1])]
    return inner.strip() or None


def is_truthy(value: Any) -> bool:
    """Whether a rendered `when` / `if` value lets the step (or branch) run.

    Native values follow Python (`0`, `[]`, `None` are false). Strings are read as a person
    would: "false", "no", "off", "0", "none", "null" and "" (any case, trimmed) are false, so a
    value that went through text (an LLM's "false") still means no.
    """
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    if isinstance(value, Undefined):
        return False
    return bool(value)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every (non-empty) secret value replaced by `[secret]`.

    Longer values are replaced first, so a secret that contains another is removed whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any, secrets: Iterable[str]) -> Any:
    """`redact` applied to every string inside a step output (dicts and lists), keys included."""
    values = [s for s in secrets if s]
    if isinstance(value, str):
        return redact(value, values)
    if isinstance(value, Mapping):
        return {redact_value(k, values): redact_value(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, values) for v in value]
    return value


# --- internals -------------------------------------------------------------------------------


def _has_template(text: str) -> bool:
    return any(marker in text for marker in _MARKERS)


@functools.lru_cache(maxsize=2048)
def _template(text: str) -> Any:
    return _ENV.from_string(text)


@functools.lru_cache(maxsize=2048)
def _expression(source: str) -> Any:
    # compile_expression evaluates inside the same sandboxed environment (attribute access goes
    # through _ENV.getattr), and hands back the Python object itself: this is how types survive
    # without NativeEnvironment's literal_eval round trip through text.
    return _ENV.compile_expression(source, undefined_to_none=False)


def _render_text(text: str, context: Mapping[str, Any], *, step: str, key: str) -> Any:
    if not _has_template(text):
        return text
    try:
        with sandbox.budget():
            source = single_expression(text)
            if source is not None:
                result = _expression(source)(dict(context))
                undefined = _first_undefined(result)
                if undefined is not None:
                    undefined._fail_with_undefined_error()
                return sandbox.checked(result)
            rendered = _template(text).render(dict(context))
            if len(rendered) > sandbox.MAX_SIZE:
                raise sandbox.LimitError(f"output longer than {sandbox.MAX_SIZE:,} characters")
            return rendered
    except sandbox.LimitError as exc:
        raise TemplateError(step, key, problem=f"exceeds a template limit: {exc}") from None
    except SecurityError as exc:
        raise TemplateError(step, key, problem=f"not allowed: {_safe(str(exc), context)}") from None
    except UndefinedError as exc:
        variable = _safe(_missing_variable(text, context, exc), context)
        raise TemplateError(step, key, variable) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(step, key, problem=f"template syntax error: {exc.message}") from None
    except Exception as exc:  # a template is user code: any failure is the user's to fix
        problem = f"cannot evaluate: {type(exc).__name__}: {_safe(str(exc), context)}"
        raise TemplateError(step, key, problem=problem) from None


def _constant_expressions(node: nodes.Node, assigned: set[str]) -> Iterator[nodes.Expr]:
    """The largest expressions in `node` that use no variable (only Jinja's globals such as
    `range`): what can be evaluated before any run, the same at every run."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Expr) and not isinstance(child, nodes.Literal) and _is_constant(child, assigned):
            yield child
        else:
            yield from _constant_expressions(child, assigned)


def _is_constant(node: nodes.Expr, assigned: set[str]) -> bool:
    for name in node.find_all(nodes.Name):
        if name.name in assigned or name.name not in _ENV.globals:
            return False
    return not any(True for _ in node.find_all((nodes.ContextReference, nodes.DerivedContextReference)))


def _first_undefined(value: Any) -> Undefined | None:
    """An Undefined inside a native result (`{{ [x] }}` would otherwise carry it out silently)."""
    if isinstance(value, Undefined):
        return value
    if isinstance(value, list | tuple):
        items: Iterable[Any] = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return None
    for item in items:
        found = _first_undefined(item)
        if found is not None:
            return found
    return None


def _safe(message: str, context: Mapping[str, Any]) -> str:
    secrets = context.get("secrets")
    if isinstance(secrets, SecretsView):
        return redact(message, secrets._all_values())
    return message


_Link = tuple[str, Any]  # ("name" | "attr" | "item", name or key)


def _missing_variable(text: str, context: Mapping[str, Any], exc: UndefinedError) -> str:
    """The full dotted name of the first variable that does not resolve (`steps.find.outptu`).

    Jinja's own message only knows the last link ("'dict object' has no attribute 'outptu'"),
    so walk every dotted chain in the template against the context and report the shortest
    prefix that is missing. Names the template assigns itself (loop variables, `set`) cannot
    be checked this way; for those, fall back to Jinja's message.
    """
    try:
        tree = _ENV.parse(text)
    except TemplateSyntaxError:
        return _name_from_message(str(exc))
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    local_chains: list[list[_Link]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        chain = _chain(node)
        if chain is None:
            continue
        root = chain[0][1]
        if root in assigned:
            local_chains.append(chain)
            continue
        if root not in context and (root in _ENV.globals or root == "loop"):
            continue
        missing = _first_missing(chain, context)
        if missing is not None:
            return missing
    name = _name_from_message(str(exc))
    for chain in local_chains:  # `{{ row.clinet }}` inside a loop: show the chain as written
        if len(chain) > 1 and str(chain[-1][1]) == name:
            return _display(chain)
    return name


def _chain(node: nodes.Node) -> list[_Link] | None:
    if isinstance(node, nodes.Name):
        return [("name", node.name)] if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        head = _chain(node.node)
        return None if head is None else [*head, ("attr", node.attr)]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        head = _chain(node.node)
        return None if head is None else [*head, ("item", node.arg.value)]
    return None


def _first_missing(chain: list[_Link], context: Mapping[str, Any]) -> str | None:
    root = chain[0][1]
    if root not in context:
        return str(root)
    obj: Any = context[root]
    for length, (kind, part) in enumerate(chain[1:], start=2):
        obj = _ENV.getattr(obj, part) if kind == "attr" else _ENV.getitem(obj, part)
        if isinstance(obj, Undefined):
            return _display(chain[:length])
    return None


def _display(chain: list[_Link]) -> str:
    shown = str(chain[0][1])
    for _, part in chain[1:]:
        shown += f".{part}" if isinstance(part, str) and part.isidentifier() else f"[{part!r}]"
    return shown


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_NO_ATTRIBUTE = re.compile(r"has no (?:attribute|element) (.+)$")


def _name_from_message(message: str) -> str:
    match = _UNDEFINED_NAME.match(message)
    if match:
        return match.group(1)
    match = _NO_ATTRIBUTE.search(message)
    if match:
        return match.group(1).strip("'")
    return message
