"""The `teammates` command line, as an operator uses it."""

from __future__ import annotations

import yaml

from tests.conftest import CONFIG, Stack
from tests.fakes.anthropic_api import Reply


def test_bad_config_is_one_clear_line_without_traceback(stack: Stack) -> None:
    cases = {
        "database_ur: sqlite:///x.db\n": "database_ur: unknown key",
        "members:\n  - {id: Nova!, name: N, role: r}\n": "members[Nova!].id: expected a url-safe id",
        "members: [ {id: nova, name: N} ]\n": "members[nova].role: required but missing",
        "members: [ {id: nova, name: N, role: r, tools: [send_fax]} ]\n": "members[nova].tools: unknown tool 'send_fax'",
        "workspace: {timezone: Mars/Olympus}\n": "workspace.timezone: expected an IANA time zone name",
        "llm: {max_tokens: lots}\n": "llm.max_tokens: expected",
        "members: [ {id: nova, name: N, role: r, slack: {bot_token: 'abc'}} ]\n": "members[nova].slack.bot_token: expected a bot token starting with 'xoxb-'",
        "members:\n - id: a\n  name: b\n": "not valid YAML at line",
    }
    for text, expected in cases.items():
        (stack.workdir / "bad.yml").write_text(text)
        result = stack.cli("--config", "bad.yml", "check")
        assert result.returncode == 2, (text, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("teammates: bad.yml: ") and expected in lines[0], (expected, lines[0])
    missing = stack.cli("--config", "nope.yml", "check")
    assert missing.returncode == 2 and "nope.yml: cannot read the config file" in missing.stderr


def test_a_secret_in_a_bad_value_is_never_echoed(stack: Stack) -> None:
    (stack.workdir / "bad.yml").write_text("members: [ {id: nova, name: N, role: r, slack: {bot_token: 'sup3rsecret'}} ]\n")
    result = stack.cli("--config", "bad.yml", "check")
    assert result.returncode == 2 and "sup3rsecret" not in result.stderr


def test_check_names_the_member_whose_token_is_wrong(stack: Stack) -> None:
    result = stack.cli("check", env={"CASEY_SLACK_BOT_TOKEN": "xoxb-revoked"})
    assert result.returncode == 1
    out = result.stdout
    assert "database: ok" in out and "redis: ok" in out
    assert "member nova: slack ok (bot <@U0NOVA0001>" in out
    assert "member casey: slack FAILED: invalid_auth: the bot token was rejected" in out


def test_check_reports_a_non_json_slack_answer_per_member_and_the_llm_key(stack: Stack) -> None:
    stack.slack.fail_next("auth.test", status=502, body="<html><body>502 Bad Gateway</body></html>")
    result = stack.cli("check")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if "slack FAILED" in line]
    assert len(failed) == 1 and "answered HTTP 502 without Slack's JSON" in failed[0], result.stdout
    assert sum("slack ok" in line for line in result.stdout.splitlines()) == 1
    assert "LLM: key accepted (model claude-test-model" in result.stdout
    assert [r["path"] for r in stack.llm.requests] == ["/v1/models/claude-test-model"]
    sent = stack.llm.requests[0]["headers"]
    assert "sk-ant-test-key" in (sent.get("x-api-key") or sent.get("authorization", ""))


def test_check_says_when_the_llm_key_is_rejected(stack: Stack) -> None:
    stack.llm.set_api_keys({"sk-ant-the-real-key"})
    result = stack.cli("check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LLM: FAILED: the key was rejected by " in result.stdout
    assert "sk-ant-test-key" not in result.stdout + result.stderr
    assert "member nova: slack ok" in result.stdout  # the rest is still checked
    unset = stack.cli("check", env={"ANTHROPIC_API_KEY": ""})
    assert unset.returncode == 1 and "LLM: FAILED: ANTHROPIC_API_KEY is not set" in unset.stdout


def test_a_member_without_slack_credentials_is_not_connected_but_not_an_error(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if not k.startswith("CASEY_")}
    stack.env = env
    result = stack.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "member casey: slack not connected (CASEY_SLACK_BOT_TOKEN and CASEY_SLACK_SIGNING_SECRET not set)" in result.stdout
    stack.start_web()
    warnings = [line for line in stack.logs("web").splitlines() if "not served on Slack" in line]
    assert len(warnings) == 1 and "casey" in warnings[0] and "CASEY_SLACK_BOT_TOKEN" in warnings[0]


def test_manifest_is_a_slack_app_manifest_pointing_at_the_member_route(stack: Stack) -> None:
    result = stack.cli("manifest", "nova", "--url", "https://bots.acme.test/")
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert manifest["display_information"]["name"] == "Nova"
    assert manifest["features"]["bot_user"]["display_name"] == "Nova"
    url = "https://bots.acme.test/slack/nova/events"
    assert manifest["settings"]["event_subscriptions"]["request_url"] == url
    assert manifest["settings"]["interactivity"]["request_url"] == url
    assert {"app_mention", "message.im", "message.channels"} <= set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"chat:write", "im:history", "reactions:write", "users:read"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    unknown = stack.cli("manifest", "zed")
    assert unknown.returncode == 2 and "no member 'zed'" in unknown.stderr


def test_chat_in_the_terminal_uses_the_same_core_and_remembers(stack: Stack) -> None:
    stack.llm.script(Reply(text="Hello! I'm Nova."), Reply(text="You asked who I am."))
    first = stack.cli("chat", "nova", input="who are you?\n")
    assert first.returncode == 0, first.stderr
    assert "Nova: Hello! I'm Nova." in first.stdout
    second = stack.cli("chat", "nova", input="what did I ask before?\n")
    assert "Nova: You asked who I am." in second.stdout
    messages = stack.llm.requests[-1]["body"]["messages"]
    assert messages[0]["content"] == "who are you?" and messages[1]["content"] == "Hello! I'm Nova."


def test_chat_works_on_a_fresh_machine_without_slack_or_redis(stack: Stack) -> None:
    bare = {k: v for k, v in stack.env.items() if not k.startswith(("NOVA_", "CASEY_", "REDIS_", "DATABASE_"))}
    bare["REDIS_URL"] = "redis://127.0.0.1:1/0"
    (stack.workdir / "teammates.yml").write_text(CONFIG)
    stack.env = bare
    stack.llm.script(Reply(text="Hi from the terminal."))
    result = stack.cli("chat", "nova", input="hi\n")
    assert result.returncode == 0, result.stderr
    assert "Nova: Hi from the terminal." in result.stdout
    assert (stack.workdir / "teammates.db").exists()  # the embedded database was created and migrated
