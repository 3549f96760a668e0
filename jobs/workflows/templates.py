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

Secrets reach templates as a `SecretsView` (in tool step args only; see `reads_secrets` for the
check at apply), which decrypts a value on first read and records the names read so the caller
can `redact` those values, and their usual encodings, from logs, outputs and error messages.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
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


class SecretAccessError(Exception):
    """A template read `secrets` where it may not (outside a tool step's args), or a secret
    that cannot be decrypted. The message names the secret, never its value."""


class SecretsView(Mapping[str, str]):
    """The workspace's secrets as templates see them (`{{ secrets.NAME }}`).

    A value is decrypted on its first read (`opener`), and only then: a step that reads no
    secret never decrypts one, and a row that cannot be decrypted fails only the steps that
    read it. Reading a value records its name in `used`, so a run can redact exactly what it
    touched. A view made with `refused` answers every read with that reason (secrets are read
    only in tool step args). Its repr shows names only: printing the view never leaks a value.
    A secret whose name clashes with a mapping method (`items`, `get`, ...) is read as
    `{{ secrets['items'] }}`.
    """

    def __init__(self, values: Mapping[str, str] | None = None, *, names: Iterable[str] = (),
                 opener: Callable[[str], str] | None = None, refused: str | None = None) -> None:
        self._read: dict[str, str] = {}
        self._values = dict(values or {})
        self._names = frozenset(names) | frozenset(self._values)
        self._opener = opener
        self._refused = refused
        self._used: set[str] = set()

    @classmethod
    def refusing(cls, reason: str) -> SecretsView:
        """A view whose every read fails with `reason`."""
        return cls(refused=reason)

    def __getitem__(self, name: str) -> str:
        if self._refused is not None:
            raise SecretAccessError(self._refused)
        if name not in self._names:
            raise KeyError(name)
        if name not in self._read:
            if name in self._values:
                self._read[name] = self._values[name]
            else:
                assert self._opener is not None
                try:
                    self._read[name] = self._opener(name)
                except ValueError as exc:  # the store's SecretKeyError: names the secret only
                    raise SecretAccessError(str(exc)) from None
        self._used.add(name)
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        if self._refused is not None:
            raise SecretAccessError(self._refused)
        return iter(sorted(self._names))

    def __len__(self) -> int:
        if self._refused is not None:
            raise SecretAccessError(self._refused)
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return self._refused is None and name in self._names

    def __repr__(self) -> str:
        return f"<secrets: {', '.join(sorted(self._names)) or 'none'}>"

    __str__ = __repr__

    @property
    def used(self) -> frozenset[str]:
        """Names of the secrets read so far."""
        return frozenset(self._used)

    def used_values(self) -> list[str]:
        """Values of the secrets read so far: what `redact` must remove from this run's text.
        (A value is only ever known to this process once read, so no other can leak.)"""
        return [self._read[name] for name in sorted(self._used)]

    def redact(self, text: str) -> str:
        """`text` with every secret value read so far (and its usual encodings) replaced."""
        return redact(text, self.used_values())


@functools.lru_cache(maxsize=2048)
def reads_secrets(text: str) -> bool:
    """Does the template `text` refer to `secrets` at all (`secrets.X`, `secrets['X']`,
    `secrets | list`, `{% set s = secrets %}`...)? Decided on Jinja's syntax tree, not the
    text, so spacing, quoting and filters do not hide a read. Not a template, or one that does
    not parse (its syntax error is reported elsewhere): False."""
    if not _has_template(text):
        return False
    try:
        tree = _ENV.parse(text)  # parse only: constant folding happens at compile time
    except TemplateSyntaxError:
        return False
    return any(node.name == "secrets" for node in tree.find_all(nodes.Name))


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
    """`text` with every (non-empty) secret value replaced by `[secret]`, and with it what a
    tool could echo of it: any letter case, reversed, URL-, JSON-, HTML-, hex- and
    base64-encoded (also inside a longer base64 text, such as a Basic auth header).

    Values shorter than four characters are matched only exactly, so redacting them does not
    shred ordinary words."""
    values = tuple(sorted({s for s in secrets if s}))
    if not values or not text:
        return text
    return _redaction_pattern(values).sub(REDACTED, text)


def redact_value(value: Any, secrets: Iterable[str]) -> Any:
    """`redact` applied to every string inside a step output (dicts and lists), keys included."""
    values = [s for s in secrets if s]
    if isinstance(value, str):
        return redact(value, values)
    if isinstance(value, Mapping):
        return {redact_value(k, values): redact_value(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, values) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and values:
        shown = redact(str(value), values)  # a numeric secret (a PIN) echoed back as a number
        return shown if shown != str(value) else value
    return value


# --- internals -------------------------------------------------------------------------------


def _has_template(text: str) -> bool:
    return any(marker in text for marker in _MARKERS)


@functools.lru_cache(maxsize=64)
def _redaction_pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    forms: set[str] = set()
    for value in values:
        forms.add(value)
        if len(value) >= _MIN_TRANSFORMED:
            forms.update(_encodings(value))
    alternatives = sorted((f for f in forms if f), key=len, reverse=True)  # longest first
    return re.compile("|".join(re.escape(f) for f in alternatives), re.IGNORECASE)


_MIN_TRANSFORMED = 4


def _encodings(value: str) -> set[str]:
    """What a tool may echo instead of the value itself (matched in any letter case)."""
    raw = value.encode()
    found = {value.strip(), value[::-1], urllib.parse.quote(value, safe=""), urllib.parse.quote(value),
             urllib.parse.quote_plus(value), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             html.escape(value), raw.hex(), repr(value)[1:-1], value.encode("unicode_escape").decode()}
    found |= {v[::-1] for v in list(found)}
    for encode in (base64.b64encode, base64.urlsafe_b64encode, base64.b32encode):
        found.add(encode(raw).decode().rstrip("="))
    # Inside a longer base64 text the value starts at any of three byte offsets; the characters
    # that depend on the value's bytes alone are the same whatever surrounds it.
    for offset in (1, 2):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        start, end = -(-8 * offset // 6), (8 * offset + 8 * len(raw)) // 6
        for text in (encoded[start:end], encoded[start:end].replace("+", "-").replace("/", "_")):
            if len(text) >= 8:
                found.add(text)
    encoded = base64.b64encode(raw).decode()
    if len(raw) % 3 and len(encoded[: 8 * len(raw) // 6]) >= 8:
        found.add(encoded[: 8 * len(raw) // 6])  # followed by more bytes: the last char differs
    return found


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
    except SecretAccessError as exc:
        raise TemplateError(step, key, problem=str(exc)) from None
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
        return secrets.redact(message)
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
