"""`apply` stands up to any document a person or a language model may write: it answers within
a second with the workflow applied or one clear `ApplyError` line, never another exception (which
the CLI would print as a traceback), whatever the shape, types, sizes or nesting.

Documents are built from the definition format's own keys and step kinds with random values
(template fragments included), then mutated; plus raw text that is not a mapping at all. One
database for the whole run, through the core `apply` the CLI and the builder call.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.workflows.apply import ApplyError, Source, apply
from storage.db import Database
from tests.conftest import Stack

KINDS = {
    "agent": st.sampled_from(["nova", "casey", "ghost", "", None, 7]),
    "tool": st.sampled_from(["current_time", "lookup_user", "nope", "", None]),
    "post": st.fixed_dictionaries({"channel": st.sampled_from(["C0GENERAL1", "{{ inputs.c }}", "", 3]), "text": st.text(max_size=40)}),
    "approval": st.fixed_dictionaries({"message": st.text(max_size=20)}, optional={"timeout": st.sampled_from(["1d", "never", "-1s", "x", 5]),
                                                                                 "on_timeout": st.sampled_from(["skip", "abort", "escalate", "?"])}),
    "wait": st.sampled_from(["1s", "3d", "0s", "forever", 10, None]),
    "condition": st.fixed_dictionaries({"if": st.sampled_from(["{{ true }}", "{{ steps.a.output }}", "{{", 1]),
                                        "then": st.just([{"id": "t", "wait": "1s"}])}),
    "foreach": st.sampled_from(["{{ [1, 2] }}", "{{ range(10**9) }}", "[1]", None, {"a": 1}]),
    "parallel": st.sampled_from([[[{"id": "p1", "wait": "1s"}], [{"id": "p2", "wait": "1s"}]], [], [[]], "x"]),
    "handoff": st.fixed_dictionaries({"member": st.sampled_from(["casey", "nova", "ghost"])},
                                     optional={"workflow": st.sampled_from(["fuzz", "other", ""]), "message": st.text(max_size=20)}),
}
TEMPLATES = st.sampled_from([
    "{{ inputs.x }}", "{{ steps.a.output }}", "{{ secrets.TOKEN }}", "{% for i in range(10) %}{{ i }}{% endfor %}",
    "{{ 'a' * 10**9 }}", "{{ 9**9**9 }}", "{{", "{% if %}", "{{ item.client }}", "{{ ''.__class__ }}", "plain",
])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30), TEMPLATES)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def steps(draw: Any, depth: int = 0) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    step: dict[str, Any] = {"id": draw(st.sampled_from(["a", "b", "c", "A-1", "", "steps"])), kind: draw(KINDS[kind])}
    if kind == "foreach" and depth < 2:
        step["steps"] = draw(st.lists(steps(depth + 1), max_size=2))
    if kind == "agent":
        step["prompt"] = draw(TEMPLATES)
    if kind == "tool":
        step["args"] = draw(VALUES)
    for key in draw(st.lists(st.sampled_from(["when", "retry", "timeout", "on_error", "concurrency", "as", "extra"]), max_size=2, unique=True)):
        step[key] = draw(st.one_of(TEMPLATES, VALUES))
    return step


@st.composite
def documents(draw: Any) -> str:
    document: dict[str, Any] = {
        "name": draw(st.sampled_from(["fuzz", "other", "Bad Name", "", "x" * 200])),
        "member": draw(st.sampled_from(["nova", "casey", "ghost", None])),
        "trigger": draw(st.sampled_from([{"manual": {}}, {"schedule": "0 9 * * *", "timezone": "Mars/Olympus"},
                                         {"schedule": "61 * * * *"}, {"webhook": {"secret": "${X}"}},
                                         {"event": {"name": "member.handoff", "member": "nova"}}, {}, "manual", None])),
        "steps": draw(st.lists(steps(), max_size=4)),
    }
    if draw(st.booleans()):
        document["inputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x", "c", "1x", ""]),
                                                                 "type": st.sampled_from(["string", "integer", "blob"])}), max_size=2))
    for key in draw(st.lists(st.sampled_from(sorted(document)), max_size=2, unique=True)):
        document[key] = draw(VALUES)  # a key of the wrong type or shape
    text = json.dumps(document, default=str) if draw(st.booleans()) else yaml.safe_dump(document)
    return text


RAW = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["[" * 5000 + "]" * 5000, "{a: " * 3000 + "1" + "}" * 3000, "- " * 10000 + "x", "&a [*a]",
                     "a: &x [1]\nb: [*x, *x, *x]\n" * 3, "!!python/object:os.system {}", "\x00\xff", ": : :", "---\n---\n"]),
)


def test_random_workflow_documents_get_an_answer_within_a_second_never_a_traceback(stack: Stack) -> None:
    assert stack.cli("workflow", "list").returncode == 0  # migrates and seeds the members
    loop = asyncio.new_event_loop()
    db = Database(stack.env["DATABASE_URL"])
    answers: dict[str, int] = {"applied": 0, "refused": 0}

    async def apply_once(text: str) -> None:
        async with db.session() as session:
            try:
                await apply(session, [Source("fuzz.yml", text)], created_by="fuzz")
                answers["applied"] += 1
            except ApplyError as exc:
                assert "\n" not in str(exc).strip(), f"not one line: {exc}"
                answers["refused"] += 1

    @settings(derandomize=True, max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
    @given(st.one_of(documents(), RAW))
    def check(text: str) -> None:
        cpu, wall = time.thread_time(), time.monotonic()
        loop.run_until_complete(apply_once(text))
        assert time.thread_time() - cpu < 1.0 and time.monotonic() - wall < 10, f"slow apply of {text[:200]!r}"

    try:
        check()
    finally:
        loop.run_until_complete(db.close())
        loop.close()
    assert answers["refused"] > 0 and sum(answers.values()) > 0


def test_the_cli_answers_a_hostile_file_with_one_line(stack: Stack) -> None:
    levels = "abcdefghi"
    laughs = "a: &a ['lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol']\n" + "".join(
        f"{x}: &{x} [{', '.join(['*' + prev] * 9)}]\n" for prev, x in zip(levels, levels[1:], strict=False))
    for name, text in (("deep.yml", "[" * 5000 + "]" * 5000), ("laughs.yml", laughs), ("binary.yml", "\x00\x01name: x")):
        path = stack.workdir / name
        path.write_text(text)
        started = time.monotonic()
        result = stack.cli("workflow", "apply", str(path))
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert time.monotonic() - started < 10
