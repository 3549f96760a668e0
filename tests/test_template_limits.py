"""Templates cannot take the process down: every value, loop and render is bounded, a template
that goes past a bound is one clear error naming the step, and `apply` refuses an expression
that is over a bound before any run (Jinja would otherwise evaluate it while compiling).

Fast and offline, through the templates module's and the definition loader's public functions;
the CLI and a real run are in test_workflows.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobs.workflows.definition import DefinitionError, load_definition
from jobs.workflows.templates import TemplateError, check, render

CONTEXT: dict[str, Any] = {
    "inputs": {"n": 9, "big": 10000, "word": "ab", "items": [1, 2, 3]},
    "steps": {"find": {"output": [{"client": "Acme", "days": 3}], "error": None}},
}


class _Clock:
    """CPU time of this thread (what a hang burns; a busy shared machine does not add to it) and
    wall time (which would catch a render that sleeps)."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.thread_time(), time.monotonic()

    def fast(self) -> bool:
        return time.thread_time() - self.cpu < 1 and time.monotonic() - self.wall < 10


def failure(text: str) -> tuple[str, bool]:
    """The error a step gets for `text`, and whether it came within a second."""
    clock = _Clock()
    with pytest.raises(TemplateError) as caught:
        render(text, CONTEXT, step="draft", key="prompt")
    return str(caught.value), clock.fast()


@pytest.mark.parametrize(
    "text",
    [
        "{{ 'a' * 10**9 }}",  # folded by Jinja's compiler before: 1 GB at the syntax check
        "{{ 9**9**9 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ [0] * 10**9 }}",
        "{{ range(10**9) }}",
        "{{ lipsum(10**8) }}",
        "{{ 'a' | center(1000000000) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ 'x' | indent(10**9) }}",
    ],
)
def test_apply_refuses_an_expression_over_a_limit_at_once(text: str) -> None:
    clock = _Clock()
    problem = check(text)
    assert clock.fast()
    assert problem is not None and problem.startswith("exceeds a template limit: "), problem
    assert "\n" not in problem


def test_a_definition_with_a_huge_constant_is_refused_naming_step_and_key() -> None:
    text = (
        "name: boom\nmember: nova\ntrigger: {manual: {}}\n"
        "steps:\n  - id: shout\n    post: {channel: C0GENERAL1, text: \"{{ 'a' * 10**9 }}\"}\n"
    )
    clock = _Clock()
    with pytest.raises(DefinitionError) as caught:
        load_definition(text, source="boom.yml")
    assert clock.fast()
    assert str(caught.value).startswith("boom.yml: steps[shout].post.text: exceeds a template limit: ")


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("{{ inputs.n ** 9 ** 9 }}", "a number larger than 2**256"),
        ("{{ inputs.n ** (9 ** inputs.n) }}", "a number larger than 2**256"),
        ("{{ inputs.word * 10**9 }}", "larger than 1,000,000"),
        ("{% for i in range(inputs.big) %}{% for j in range(inputs.big) %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{% for i in range(inputs.big) %}{{ 'x' * 3000 }}{% endfor %}", "characters of text built"),
        ("{% for i in range(inputs.big * 10) %}{% endfor %}", "a range of more than 10,000 numbers"),
        ("{% set ns = namespace(s=inputs.word) %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
         "larger than 1,000,000"),
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(inputs.n * 5) }}",
         "loop iterations, calls and operations"),
        ("{% set a = [inputs.word] * 1000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
         "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ [c, c, c, c, c, c, c, c, c, c] }}", "larger than 1,000,000"),
        ("{{ range(inputs.big) | join('x' * 100) }}", "larger than 1,000,000"),
        ("{{ lipsum(inputs.big) }}", "lipsum"),
        ("{{ inputs.word.replace('', 'abcd').replace('', 'abcd').replace('', 'abcd').replace('', 'abcd')"
         ".replace('', 'abcd').replace('', 'abcd').replace('', 'abcd').replace('', 'abcd').replace('', 'abcd') }}",
         "larger than 1,000,000"),
        ("{{ (inputs.word * 400000) | wordwrap(1) }}", "larger than 1,000,000"),
    ],
)
def test_a_template_over_a_limit_fails_its_step_quickly_with_a_clear_error(text: str, limit: str) -> None:
    message, fast = failure(text)
    assert message.startswith("step 'draft': prompt: exceeds a template limit: "), message
    assert limit in message and "\n" not in message
    assert fast


@pytest.mark.parametrize("text", ["{{ " + "[" * 2000 + "]" * 2000 + " }}", "{% if 1 %}" * 300 + "{% endif %}" * 300])
def test_deep_nesting_is_a_clear_error_at_apply_and_at_run_time(text: str) -> None:
    assert check(text) == "template syntax error: nested too deeply"
    message, fast = failure(text)
    assert message.startswith("step 'draft': prompt: ") and "RecursionError" in message and fast


def test_ordinary_templates_are_untouched_by_the_limits() -> None:
    assert render("{{ inputs.items | length * 2 }}", CONTEXT, step="s", key="k") == 6
    assert render("{{ 'a' * 1000 }}", CONTEXT, step="s", key="k") == "a" * 1000
    assert render("{{ 2 ** 64 }}", CONTEXT, step="s", key="k") == 2**64
    assert render("{% for i in range(3) %}{{ i }}{% else %}none{% endfor %}", CONTEXT, step="s", key="k") == "012"
    assert render("{% for x in inputs.items if x is odd %}{{ loop.index }}/{{ loop.length }} {% endfor %}",
                  CONTEXT, step="s", key="k") == "1/2 2/2 "
    assert render("{{ inputs.word ~ '!' }} {{ 'hi {}'.format(inputs.word) }} {{ '%s-%d' % ('x', 3) }}",
                  CONTEXT, step="s", key="k") == "ab! hi ab x-3"
    assert render("{{ steps.find.output | map(attribute='client') | join(', ') | upper }}",
                  CONTEXT, step="s", key="k") == "ACME"
    assert render("{{ range(10000) | list | length }}", CONTEXT, step="s", key="k") == 10000
    assert check("{{ inputs.word * 10**9 }}") is None  # depends on the run: decided at run time
    assert check("{{ range(10) | join(',') }} {{ lipsum(2) }}") is None


# --- random templates ------------------------------------------------------------------------

_ATOMS = st.sampled_from([
    "1", "9", "10", "100000", "10**9", "9**9", "-3", "0", "2.5", "'a'", "'ab'", "''", "'%s'", "'{}'",
    "'%99999d'", "'{:>99999}'", "[1, 2]", "[]", "{'k': 1}", "range(10)", "range(100000)", "lipsum(2)",
    "inputs.n", "inputs.big", "inputs.word", "inputs.items", "steps.find.output", "true", "none", "x", "loop",
])
_OPERATORS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "~", "and", "or", "==", "<", "in"])
_FILTERS = st.sampled_from([
    "length", "string", "list", "join", "join(',')", "center(100)", "center(10**9)", "indent(8)", "indent(10**9)",
    "wordwrap(3)", "replace('a', 'bb')", "format(1)", "upper", "first", "sum", "batch(3)", "slice(10**9)",
    "tojson", "int", "abs", "round", "reverse", "unique", "sort", "map('string')", "default(1)", "truncate(5)",
])


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 4 if depth < 3 else 0))
    if kind == 0:
        return draw(_ATOMS)
    if kind == 1:
        return f"({draw(_expressions(depth + 1))} {draw(_OPERATORS)} {draw(_expressions(depth + 1))})"
    if kind == 2:
        return f"({draw(_expressions(depth + 1))} | {draw(_FILTERS)})"
    if kind == 3:
        return f"({draw(_expressions(depth + 1))})[{draw(_expressions(depth + 1))}]"
    return f"({draw(_expressions(depth + 1))} if {draw(_expressions(depth + 1))} else {draw(_expressions(depth + 1))})"


@st.composite
def _templates(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5 if depth < 2 else 2))
        if kind == 0:
            plain = st.sampled_from(["text ", " ", "\n", "x" * 50])
            broken = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "{{ }}", "{% endfor %}"])
            parts.append(draw(st.one_of(plain, plain, plain, broken)))
        elif kind in (1, 2):
            parts.append("{{ " + draw(_expressions()) + " }}")
        elif kind == 3:
            parts.append(f"{{% for x in {draw(_expressions())} %}}{draw(_templates(depth + 1))}{{% endfor %}}")
        elif kind == 4:
            parts.append(f"{{% if {draw(_expressions())} %}}{draw(_templates(depth + 1))}{{% else %}}x{{% endif %}}")
        else:
            parts.append(f"{{% set x = {draw(_expressions())} %}}{draw(_templates(depth + 1))}")
    return "".join(parts)


@settings(derandomize=True, max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_templates())
def test_random_templates_give_a_value_or_a_clear_error_never_a_hang(text: str) -> None:
    clock = _Clock()
    problem = check(text)
    assert problem is None or problem.startswith(("template syntax error: ", "exceeds a template limit: ")), problem
    assert clock.fast(), f"check took too long: {text!r}"
    event(problem.split(":")[0] if problem else "accepted")
    if problem is not None and problem.startswith("template syntax error"):
        return
    clock = _Clock()
    try:
        render(text, CONTEXT, step="fuzz", key="text")
        event("rendered")
    except TemplateError as exc:  # any other exception type fails the test
        assert str(exc).startswith("step 'fuzz': text: ") and "\n" not in str(exc)
        event(f"failed: {exc.problem.split(':')[0]}")
    assert clock.fast(), f"render took too long: {text!r}"
