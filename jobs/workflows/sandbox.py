"""A Jinja sandbox with resource limits: no template can exhaust memory or time.

Workflow templates come from chat users (and later from a language model), so a template is
hostile until proven otherwise. Jinja's own sandbox stops attribute tricks but not cost:
`{{ 'a' * 10**9 }}`, `{{ 9**9**9 }}`, nested `range(100000)` loops or `lipsum(10**8)` each take
the whole process. The invariant this module keeps:

- **Every value a template builds is bounded** — strings, lists and dicts by `MAX_SIZE`
  characters/items (counted through nesting), integers by `MAX_INT_BITS`, ranges by
  `MAX_RANGE`, nesting by `MAX_DEPTH` — and the bound is checked *before* the work where an
  operation could amplify its inputs (`*`, `**`, `%`, `str.format`, `center`, `indent`, `join`,
  `replace`, ...), after it everywhere else.
- **Every render is bounded**: at most `MAX_STEPS` loop iterations, calls, filters and
  operators, at most `MAX_WORK` characters of text built, `MAX_SIZE` characters of output; a
  cooperative deadline (`MAX_SECONDS`, checked at each of those steps) is only the backstop.
- **Nothing is evaluated at compile time.** Jinja folds constant expressions while it compiles
  (`nodes.as_const`), so a syntax check alone could hang. The optimizer is off; and, so that no
  other folding path can come back, every binary operator is intercepted (intercepted operators
  are never folded), every filter takes the context (such filters are never folded) and
  `finalize` takes the context (so output expressions are never folded).

A limit that is exceeded raises `LimitError`, one line saying which limit; the caller turns it
into the step's error. The process never dies or hangs.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import nodes
from jinja2.environment import TemplateExpression
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

MAX_SIZE = 1_000_000  # characters of a string, or characters + items of a list/dict (nested)
MAX_INT_BITS = 256  # about 1.2e77: far beyond any count, amount or id (a UUID is 128)
MAX_RANGE = 10_000  # numbers in one range() (Jinja allows 100,000: more than a render's steps)
MAX_DEPTH = 100  # nesting of lists and dicts
MAX_STEPS = 100_000  # loop iterations + calls + filters + operators in one render (~0.05 s)
MAX_WORK = 20_000_000  # characters of text built in one render (intermediate strings too)
MAX_LIPSUM_WORDS = 20_000
MAX_SECONDS = 2.0  # CPU seconds; a backstop only: the structural bounds end a render well before


class LimitError(Exception):
    """A template exceeded a resource limit; the message says which, in one line."""


class BudgetError(LimitError):
    """The render as a whole ran out of steps, work or time (not a single oversized value)."""


@dataclass
class _Budget:
    deadline: float
    steps: int = 0
    work: int = 0
    sizes: dict[int, tuple[Any, int]] = field(default_factory=dict)  # id -> (object, size)


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float = MAX_SECONDS) -> Iterator[None]:
    """Everything a template does inside this block counts against one fresh budget."""
    # CPU time of this thread, not wall time: on a busy machine a render that waits for the CPU
    # is not a template's fault, and a render is synchronous, so nothing else runs on the thread.
    token = _BUDGET.set(_Budget(deadline=time.thread_time() + seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _tick(work: int = 0) -> None:
    current = _BUDGET.get()
    if current is None:  # outside a render (never during compilation: nothing is folded)
        return
    current.steps += 1
    current.work += work
    if current.steps > MAX_STEPS:
        raise BudgetError(f"more than {MAX_STEPS:,} loop iterations, calls and operations")
    if current.work > MAX_WORK:
        raise BudgetError(f"more than {MAX_WORK:,} characters of text built")
    if time.thread_time() > current.deadline:
        raise BudgetError(f"took more than {MAX_SECONDS:g} seconds of CPU time")


# --- sizes -----------------------------------------------------------------------------------


def size(value: Any) -> int:
    """How big `value` is once shown as text: characters of strings, items of containers,
    counted through nesting (a list shared ten times counts ten times, as its text would).
    Raises `LimitError` as soon as it passes `MAX_SIZE` or `MAX_DEPTH`, so it costs at most
    about `MAX_SIZE` steps; containers already measured in this render are not walked again."""
    current = _BUDGET.get()
    cache = current.sizes if current is not None else {}
    return _size(value, 0, cache)


def _size(value: Any, depth: int, cache: dict[int, tuple[Any, int]]) -> int:
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return 1
    if isinstance(value, int):
        return max(1, value.bit_length() // 3)  # about its decimal digits
    if isinstance(value, Namespace):  # mutable: never cached
        return 1 + _size(dict(value._Namespace__attrs), depth, {})  # type: ignore[attr-defined]
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return 1  # opaque objects (ranges, generators, Undefined, SecretsView): shown short
    if depth >= MAX_DEPTH:
        raise LimitError(f"lists or dicts nested more than {MAX_DEPTH} levels deep")
    known = cache.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    total = 1
    parts: Iterable[Any] = (p for kv in value.items() for p in kv) if isinstance(value, dict) else value
    for part in parts:
        total += 1 + _size(part, depth + 1, cache)
        if total > MAX_SIZE:
            raise LimitError(_too_big())
    cache[id(value)] = (value, total)  # the object is kept, so its id is not reused meanwhile
    return total


def _too_big() -> str:
    return f"a value larger than {MAX_SIZE:,} characters or items"


def _check_size(estimate: int) -> None:
    if estimate > MAX_SIZE:
        raise LimitError(_too_big())


def checked(value: Any) -> Any:
    """`value` itself, after checking it is within the value limits."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise LimitError(f"a number larger than 2**{MAX_INT_BITS}")
        return value
    if isinstance(value, str | bytes | bytearray):
        _check_size(len(value))
        return value
    _check_size(size(value))
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _width(value: Any, what: str) -> int:
    """A width/count argument: an int within `MAX_SIZE` (other types pass; the callee decides)."""
    number = _int(value)
    if number is not None and number > MAX_SIZE:
        raise LimitError(f"{what} {number} is larger than {MAX_SIZE:,}")
    return number if number is not None and number > 0 else 0


# --- operators -------------------------------------------------------------------------------


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before computing it, a result that would break a limit."""
    if operator == "**":
        base, exponent = _int(left), _int(right)
        if base is not None and exponent is not None and exponent > 0 and abs(base) > 1:
            if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
                raise LimitError(f"a number larger than 2**{MAX_INT_BITS}")
    elif operator == "*":
        a, b = _int(left), _int(right)
        if a is not None and b is not None:
            if a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
                raise LimitError(f"a number larger than 2**{MAX_INT_BITS}")
        elif a is not None or b is not None:
            times, seq = (a, right) if a is not None else (b, left)
            if isinstance(seq, str | bytes | list | tuple) and times is not None and times > 0:
                _check_size(size(seq) * times)
    elif operator == "+":
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
            _check_size(size(left) + size(right))
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def _check_percent_format(text: str, args: Any) -> None:
    """`'%99999999d' % 1` would build the padding before anything could look at it."""
    estimate = len(text) + size(args)
    for width, precision, _ in _PERCENT_SPEC.findall(text):
        for number in (width, precision):
            if number == "*":
                raise LimitError("a '*' width or precision in % formatting is not allowed in templates")
            if number:
                estimate += int(number) if len(number) <= 8 else MAX_SIZE + 1
    _check_size(estimate)


_DIGITS = re.compile(r"\d+")


class _BoundedFormatterMixin(string.Formatter):
    """`str.format` whose fields (widths, precisions, values) and whole result stay in bounds."""

    _built = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        estimate = size(value)
        for number in _DIGITS.findall(format_spec):
            estimate += int(number) if len(number) <= 8 else MAX_SIZE + 1
        _check_size(estimate)
        result = super().format_field(value, format_spec)
        self._built += len(result)
        _check_size(self._built)
        return result


class _BoundedFormatter(_BoundedFormatterMixin, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatterMixin, SandboxedFormatter, EscapeFormatter):
    pass


# --- calls of builtin methods ----------------------------------------------------------------


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Pre-check the few builtin methods whose result can be far larger than their inputs.

    Returns the arguments to call with (an iterable to `join` is read once, here)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str | bytes | bytearray):
        text = owner
        if name in ("center", "ljust", "rjust", "zfill") and args:
            _check_size(max(len(text), _width(args[0], "width")))
        elif name == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            count = text.count("\t") if isinstance(text, str) else text.count(b"\t")
            _check_size(len(text) + count * _width(tabsize, "tab size"))
        elif name == "replace" and len(args) >= 2:
            _check_replace(text, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
        elif name == "join" and args:
            items = list(args[0])
            _check_size(len(text) * max(len(items) - 1, 0) + sum(size(item) for item in items))
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((size(v) for v in args[0].values()), default=1)
            _check_size(len(text) * max(longest, 1))
    elif _int(owner) is not None and name == "to_bytes":
        _width(args[0] if args else kwargs.get("length", 1), "length")
    return args


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(old, str | bytes) and isinstance(new, str | bytes)):
        return
    found = text.count(old) if old else len(text) + 1
    limit = _int(count)
    if limit is not None and limit >= 0:
        found = min(found, limit)
    _check_size(len(text) + found * max(len(new) - len(old), 0))


# --- filters ---------------------------------------------------------------------------------


def _filter_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    _check_size(max(size(value), _width(width, "width")))


def _filter_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    per_line = len(width) if isinstance(width, str) else _width(width, "width")
    text = str(value) if isinstance(value, str) else ""
    _check_size(size(value) + (text.count("\n") + 1) * per_line)


def _filter_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                     *_: Any, **kwargs: Any) -> None:
    wrap = kwargs.get("wrapstring", wrapstring)
    text = value if isinstance(value, str) else ""
    lines = len(text) // max(_int(kwargs.get("width", width)) or 1, 1) + text.count(" ") + text.count("\n") + 1
    _check_size(len(text) + lines * (len(wrap) if isinstance(wrap, str) else 1))


def _filter_replace(value: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any, **__: Any) -> None:
    if isinstance(value, str):
        _check_replace(value, str(old), str(new), count)


def _filter_format(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent_format(value, kwargs or args)


def _filter_batch(value: Any, linecount: Any = 1, *_: Any, **__: Any) -> None:
    _width(linecount, "batch size")


def _filter_slice(value: Any, slices: Any = 1, *_: Any, **__: Any) -> None:
    count = _int(slices)
    if count is not None and count > MAX_RANGE:
        raise LimitError(f"slice count {count} is larger than {MAX_RANGE:,}")


def _filter_tojson(value: Any, indent: Any = None, *_: Any, **__: Any) -> None:
    if (_int(indent) or 0) > 16 or (isinstance(indent, str) and len(indent) > 16):
        raise LimitError("a tojson indent larger than 16")


def _filter_sum(value: Any, attribute: Any = None, start: Any = 0, *_: Any, **__: Any) -> None:
    # Adding lists copies the growing total each time: quadratic, so not offered at all.
    if isinstance(__.get("start", start), list | tuple):
        raise LimitError("sum() of lists is not allowed in templates (use a loop or `map`)")


_PRE_CHECKS: dict[str, Callable[..., None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "replace": _filter_replace,
    "format": _filter_format,
    "batch": _filter_batch,
    "slice": _filter_slice,
    "tojson": _filter_tojson,
    "sum": _filter_sum,
}

_READS_WHOLE = frozenset({"join"})  # filters given a list, so their input can be measured first


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = _PassArg.from_obj(func)
    pre_check = _PRE_CHECKS.get(name)

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        if name in _READS_WHOLE and not isinstance(value, str | list | tuple | dict):
            value = list(value)
        if name == "join":
            separator = args[0] if args else kwargs.get("d", "")
            count = len(value)
            _check_size(sum(size(v) for v in value) + max(count - 1, 0) * len(str(separator)))
        else:
            checked(value)
        if pre_check is not None:
            pre_check(value, *args, **kwargs)
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        if isinstance(result, str):
            _tick(len(result))
        return checked(result)

    bounded.__name__ = getattr(func, "__name__", name)
    bounded.__doc__ = func.__doc__
    return bounded


# --- globals ---------------------------------------------------------------------------------


def _range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise LimitError(f"a range of more than {MAX_RANGE:,} numbers")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    if _int(n) is None or _int(max) is None or n * max > MAX_LIPSUM_WORDS:
        raise LimitError(f"lipsum of more than {MAX_LIPSUM_WORDS:,} words")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


# --- the environment -------------------------------------------------------------------------


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every `{{ output }}`: bounded before Jinja turns it into text, and counted as work."""
    checked(value)
    _tick(size(value))
    return value


class _Bound(NodeTransformer):
    """Rewrites the parsed template so loops, `~` and loop text pass through the environment.

    `for x in xs` reads `xs` through `environment.loop_items` (each item counts as a step, the
    `if` filter's rejects too), a loop body starts by charging its literal text as work (a body
    of plain text repeated 100,000 times would otherwise go unseen), and `a ~ b` becomes
    `environment.join_text((a, b))`, bounded before it joins.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("loop_items", node.iter, lineno=node.lineno)  # type: ignore[arg-type]
        text = _literal_text(node.body)
        if text:
            charge = nodes.ExprStmt(_env_call("loop_text", nodes.Const(text, lineno=node.lineno), lineno=node.lineno),
                                    lineno=node.lineno)
            node.body = [charge, *node.body]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("join_text", nodes.Tuple(node.nodes, "load", lineno=node.lineno), lineno=node.lineno)


def _env_call(name: str, arg: nodes.Expr, *, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), [arg], [], None, None, lineno=lineno)


def _literal_text(body: list[nodes.Node]) -> int:
    """Characters of plain text a loop body emits (nested loops charge their own)."""
    total = 0
    for node in body:
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock):
            total += _literal_text(list(node.iter_child_nodes()))
    return total


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits of this module on every operator, call,
    filter, loop and output."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})  # never folded

    def __init__(self, **options: Any) -> None:
        # No constant folding at all: the optimizer evaluates expressions while compiling, where
        # no budget applies and where even an error escapes as a crash (`{{ 1 if 1[1] else 1 }}`
        # raised UndefinedError from the compiler).
        super().__init__(finalize=_finalize, optimized=False, **options)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        _Bound().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        result = self.binop_table[operator](left, right)
        if isinstance(result, str | bytes):
            _tick(len(result))
        return checked(result)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - as Jinja names it
        _tick()
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (__self.loop_items(args[0]), *args[1:])
        elif isinstance(__obj, types.BuiltinMethodType | types.MethodWrapperType):
            args = _check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            _tick(len(result))
        return checked(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map` through a formatter that bounds what it builds."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        is_map = value.__name__ == "format_map"
        kind = type(owner)

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            formatter: _BoundedFormatterMixin
            if isinstance(owner, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
            else:
                formatter = _BoundedFormatter(self)
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return kind(formatter.vformat(owner, (), args[0]))
            return kind(formatter.vformat(owner, args, kwargs))

        return bounded_format

    # Called from the rewritten template (see `_Bound`).

    def loop_items(self, iterable: Any) -> Iterator[Any]:
        """The items of a loop, each one a step."""
        for item in iterable:
            _tick()
            yield item

    def loop_text(self, characters: int) -> None:
        """One pass of a loop body: its plain text counts as work."""
        _tick(characters)

    def join_text(self, parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`, measured before it is joined."""
        _check_size(sum(size(part) for part in parts))
        result = "".join(str(part) for part in parts)
        _tick(len(result))
        return result


def expression(env: BoundedEnvironment, node: nodes.Expr) -> Callable[..., Any]:
    """A callable evaluating one parsed expression node (as `compile_expression` does for text)."""
    body = nodes.Assign(nodes.Name("result", "store"), node, lineno=1)
    template = env.from_string(nodes.Template([body], lineno=1))
    return TemplateExpression(template, False)
