"""Workflow secrets: they go only into tool step args, a step decrypts only what it reads, and
no table, log line, prompt or post ever holds a value (nor its usual transformations)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import urllib.parse

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from jobs.workflows.definition import DefinitionError, load_definition
from jobs.workflows.templates import redact, redact_value
from storage.db import Database
from storage.models import Secret
from tests.conftest import GENERAL, NOVA, Stack
from tests.fakes.anthropic_api import Reply
from tests.test_workflows import apply, start, wait_status

KEY = "correct horse battery staple"
CANARY = "Zq7Canary-9x/Kp2+Lm"


def forms(value: str) -> dict[str, str]:
    """What a careless tool, template or log could turn a value into."""
    raw = value.encode()
    return {
        "value": value, "upper": value.upper(), "lower": value.lower(), "title": value.title(),
        "reversed": value[::-1], "urlencoded": urllib.parse.quote(value, safe=""), "plus": urllib.parse.quote_plus(value),
        "base64": base64.b64encode(raw).decode().rstrip("="), "json": json.dumps(value)[1:-1],
        "basic_auth": base64.b64encode(b"api:" + raw).decode(),  # the value inside a longer base64 text
        "hex": raw.hex(),
    }


def with_key(stack: Stack) -> None:
    stack.env["TEAMMATES_SECRETS_KEY"] = KEY
    config = (stack.workdir / "teammates.yml").read_text()
    (stack.workdir / "teammates.yml").write_text("secrets_key: ${TEAMMATES_SECRETS_KEY}\n" + config)


def dump_database(url: str) -> str:
    """Every row of every table, as text."""

    async def go() -> str:
        db = Database(url)
        try:
            async with db.engine.connect() as conn:
                tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
                lines = []
                for table in tables:
                    for row in (await conn.execute(text(f'SELECT * FROM "{table}"'))).all():
                        lines.append(f"{table}: {[bytes(v).decode(errors='replace') if isinstance(v, bytes | memoryview) else v for v in row]}")
                return "\n".join(lines)
        finally:
            await db.close()

    return asyncio.run(go())


def test_redaction_covers_what_a_tool_could_echo() -> None:
    for name, form in forms(CANARY).items():
        assert CANARY not in (shown := redact(f"got <{form}> back", [CANARY])) and form not in shown, name
    assert redact("the cat sat", ["cat"]) == "the [secret] sat"  # short values: exact matches only
    assert redact_value({"pin": 48213, "count": 3, "text": ["at 48213"]}, ["48213"]) == {"pin": "[secret]", "count": 3, "text": ["at [secret]"]}


@pytest.mark.parametrize("template", ["{{ secrets.X }}", "{{ secrets['X'] | upper }}", "{{ secrets | list }}",
                                      "{% set s = secrets %}{{ s.X }}", "{{ (secrets).X[::-1] }}"])
def test_any_read_of_secrets_outside_tool_args_is_refused(template: str) -> None:
    for step in (f"{{id: p, post: {{channel: C1, text: {json.dumps(template)}}}}}",
                 f"{{id: p, tool: lookup_user, when: {json.dumps('{{ true }}' if 'set' in template else template)}, args: {{user_id: x}}}}"
                 if "set" not in template else f"{{id: p, agent: nova, prompt: {json.dumps(template)}}}"):
        with pytest.raises(DefinitionError, match=r"steps\[p\]\.(post\.text|when|prompt): reads secrets, which may only be used in a tool step's args"):
            load_definition(f"name: w\nmember: nova\ntrigger: {{manual: {{}}}}\nsteps:\n  - {step}\n", source="w.yml")
    allowed = f"name: w\nmember: nova\ntrigger: {{manual: {{}}}}\nsteps:\n  - {{id: p, tool: lookup_user, args: {{user_id: {json.dumps(template)}}}}}\n"
    assert load_definition(allowed).steps[0].id == "p"


def test_apply_refuses_secrets_in_posts_prompts_approvals_and_handoffs(stack: Stack) -> None:
    head = "name: leaky\nmember: nova\ntrigger: {manual: {}}\nsteps:\n"
    cases = {
        "post.text": "  - {id: tell, post: {channel: C0GENERAL1, text: 'token {{ secrets.API_TOKEN }}'}}\n",
        "prompt": "  - {id: tell, agent: nova, prompt: \"Use {{ secrets['API_TOKEN'] | lower }}\"}\n",
        "approval.message": "  - {id: tell, approval: {message: 'ok? {{ secrets.API_TOKEN }}'}}\n",
        "handoff.message": "  - {id: tell, handoff: {member: casey, message: '{{ secrets.API_TOKEN }}'}}\n",
    }
    for key, step in cases.items():
        (stack.workdir / "leaky.yml").write_text(head + step)
        result = stack.cli("workflow", "apply", "leaky.yml")
        assert result.returncode != 0, key
        assert result.stderr.strip().splitlines() == [
            f"teammates: leaky.yml: steps[tell].{key}: reads secrets, which may only be used in a tool step's args "
            "(never in a message, prompt, approval, handoff, condition or input)"
        ], result.stderr
    assert "no workflows yet" in stack.cli("workflow", "list").stdout


def test_a_canary_secret_leaves_no_trace_in_tables_logs_prompts_or_posts(stack: Stack) -> None:
    with_key(stack)
    assert stack.cli("secret", "set", "CANARY", input=CANARY + "\n").returncode == 0
    # The tool's answer echoes the value back, transformed.
    shown = forms(CANARY)
    stack.slack.add_user(CANARY, shown["lower"], real_name=f"{shown['reversed']} {shown['base64']}",
                         email=f"{shown['urlencoded']}@acme.test")
    stack.up()
    stack.llm.script(Reply(text="Noted."))
    apply(stack, """
name: canary
member: nova
trigger: {manual: {}}
steps:
  - id: who
    tool: lookup_user
    args: {user_id: "{{ secrets.CANARY }}"}
  - id: bad
    tool: lookup_user
    on_error: continue
    args: {user_id: "{{ secrets.CANARY | upper }}-{{ secrets.CANARY[::-1] }}"}
  - id: think
    agent: nova
    prompt: "Who is {{ steps.who.output }}? It failed with {{ steps.bad.error }}"
  - id: tell
    post: {channel: C0GENERAL1, text: "{{ steps.who.output.real_name }} / {{ steps.bad.error }}"}
  - id: pass
    handoff: {member: casey, message: "{{ steps.who.output.name }} {{ steps.who.output.email }}"}
""")
    run = wait_status(stack, start(stack, "canary"), "completed", "failed")
    assert run["status"] == "completed", run
    assert "[secret]" in json.dumps(run["steps"][0]["output"]) and "[secret]" in run["steps"][1]["error"]

    places = {
        "database": dump_database(stack.env["DATABASE_URL"]),
        "logs": stack.logs("web") + stack.logs("worker"),
        "runs --json": stack.cli("runs", "--json").stdout,
        "prompts": json.dumps(stack.llm.requests),
        "posts": json.dumps([p["text"] for p in stack.slack.wait_for_posts(1, token=NOVA["token"])]),
    }
    assert "step_done" in places["database"] and "Who is" in places["prompts"]  # the places were really looked at
    for where, content in places.items():
        for name, form in shown.items():
            assert form.lower() not in content.lower(), f"the secret's {name} form is in the {where}"
    assert stack.slack.messages(GENERAL)


def test_a_bad_row_fails_only_its_readers_and_old_ciphertexts_still_decrypt(stack: Stack) -> None:
    with_key(stack)
    legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(KEY.encode()).digest()))  # how secrets were stored so far

    async def seed() -> None:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                session.add(Secret(name="ANA", ciphertext=legacy.encrypt(b"U0ANA00001")))
                session.add(Secret(name="BROKEN", ciphertext=b"not a token at all"))
        finally:
            await db.close()

    async def stored() -> dict[str, bytes]:
        db = Database(stack.env["DATABASE_URL"])
        try:
            async with db.session() as session:
                return {name: bytes(c) for name, c in (await session.execute(text("SELECT name, ciphertext FROM secrets"))).all()}
        finally:
            await db.close()

    asyncio.run(seed())
    stack.up()
    apply(stack, "name: plain\nmember: nova\ntrigger: {manual: {}}\nsteps: [{id: now, tool: current_time}]\n", "plain.yml")
    apply(stack, "name: good\nmember: nova\ntrigger: {manual: {}}\nsteps:\n"
                 "  - {id: who, tool: lookup_user, args: {user_id: '{{ secrets.ANA }}'}}\n"
                 "  - {id: tell, post: {channel: C0GENERAL1, text: '{{ steps.who.output.real_name }}'}}\n", "good.yml")
    apply(stack, "name: broken\nmember: nova\ntrigger: {manual: {}}\nsteps:\n"
                 "  - {id: who, tool: lookup_user, args: {user_id: '{{ secrets.BROKEN }}'}}\n", "broken.yml")
    plain, good, broken = start(stack, "plain"), start(stack, "good"), start(stack, "broken")
    assert wait_status(stack, plain, "completed", "failed", timeout=30)["status"] == "completed"
    assert wait_status(stack, good, "completed", "failed", timeout=30)["status"] == "completed"
    [post] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert post["text"] == "Ana de Vries"  # the old-format secret, re-encrypted, still reads
    failed = wait_status(stack, broken, "completed", "failed", timeout=30)
    assert failed["status"] == "failed"
    assert failed["steps"][0]["error"] == "step 'who': args.user_id: secret 'BROKEN' cannot be decrypted with the configured secrets_key"
    rows = asyncio.run(stored())
    assert rows["ANA"].startswith(b"v2:s:") and rows["BROKEN"] == b"not a token at all"  # re-encrypted on start
    assert "U0ANA00001" not in rows["ANA"].decode(errors="replace")
