"""The member's Slack app, accepted as pasted: `teammates manifest MEMBER --url BASE` passes
Slack's published manifest schema (tests/data/slack-manifest-schema) and the rules Slack adds,
asks for exactly the scopes and events the code uses, and `teammates slack create-app` creates
the app through `apps.manifest.create` (the fake Slack validates like the real one)."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.client import WebClient

from bot.slack import scopes
from tests.conftest import NOVA, ROOT, Stack
from tests.fakes import manifest_schema
from tests.fakes.slack_api import FakeSlack

EXAMPLE = ROOT / "teammates.example.yml"
BASE = "https://bots.acme.test"
CONFIG_TOKEN = "xoxe.xoxp-1-config-token-for-tests"
SUBCOMMANDS = ("help", "status", "workflows", "runs", "approvals", "activity", "usage", "pause", "resume", "config", "team")

# A Bolt listener argument -> the Web API methods Bolt calls when the code uses it.
BOLT_ARGUMENTS = {
    "say": ("chat.postMessage",),
    "set_status": ("assistant.threads.setStatus",),
    "set_title": ("assistant.threads.setTitle",),
    "set_suggested_prompts": ("assistant.threads.setSuggestedPrompts",),
    "say_stream": ("chat.startStream", "chat.appendStream", "chat.stopStream"),
}

CONFIG = """\
slack:
  config_token: ${SLACK_CONFIG_TOKEN}
members:
  - id: nova
    name: Nova
    role: Finance & Admin
    description: Tracks invoices and payments, sends reminders.
    slack:
      bot_token: ${NOVA_SLACK_BOT_TOKEN}
      signing_secret: ${NOVA_SLACK_SIGNING_SECRET}
  - id: ops
    name: Otto
    role: Ops
    autonomy: notify
    slash_command: /otto
    slack:
      bot_token: ${OTTO_SLACK_BOT_TOKEN}
      signing_secret: ${OTTO_SLACK_SIGNING_SECRET}
      app_token: ${OTTO_SLACK_APP_TOKEN}
"""


def cli(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`teammates ...` as a user runs it, in a clean environment (no Slack tokens set)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "ANTHROPIC_", "TEAMMATES_", "NOVA_", "CASEY_", "OTTO_"))}
    return subprocess.run([sys.executable, "-m", "teammates", *args], cwd=workdir, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=60)


def rendered(workdir: Path, member: str, *config: str, url: str = BASE) -> dict[str, Any]:
    result = cli(workdir, *config, "manifest", member, "--url", url)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def assert_accepted(manifest: dict[str, Any]) -> None:
    assert manifest_schema.validator().is_valid(manifest), list(manifest_schema.validator().iter_errors(manifest))
    assert manifest_schema.problems(manifest) == []


def test_the_example_configs_members_get_manifests_slack_accepts(tmp_path: Path) -> None:
    members = yaml.safe_load(EXAMPLE.read_text())["members"]
    assert len(members) >= 2
    for member in members:
        manifest = rendered(tmp_path, member["id"], "--config", str(EXAMPLE), url=BASE + "/")
        assert_accepted(manifest)
        display = manifest["display_information"]
        assert display["name"] == member["name"] == manifest["features"]["bot_user"]["display_name"]
        assert member["role"] in display["description"] and len(display["description"]) <= 140
        about = display["long_description"]
        assert 175 <= len(about) <= 4000
        assert member["description"] in about and member["role"] in about
        assert "direct message" in about and "@mention" in about and "workflows" in about and "approve" in about
        url = f"{BASE}/slack/{member['id']}/events"
        settings = manifest["settings"]
        assert settings["event_subscriptions"]["request_url"] == url == settings["interactivity"]["request_url"]
        assert settings["socket_mode_enabled"] is False
        [command] = manifest["features"]["slash_commands"]
        slash = member.get("slash_command") or f"/{member['id']}"
        assert command["command"] == slash and command["url"] == url
        assert all(word in command["usage_hint"] for word in SUBCOMMANDS)
        assert f"{slash} help" in about


def _web_api_methods() -> dict[str, str]:
    """slack_sdk client method name -> the Web API method it calls (read from its source)."""
    methods = {}
    for name, function in inspect.getmembers(AsyncWebClient, inspect.isfunction):
        if name.startswith("_") or not function.__qualname__.startswith("AsyncWebClient."):
            continue
        called = re.search(r'api_call\(\s*"([a-zA-Z.]+)"', inspect.getsource(function))
        if called:
            methods[name] = called.group(1)
    return methods


def _code_files() -> list[Path]:
    skip = {ROOT / "bot" / "slack" / "scopes.py"}  # the table itself
    return [p for d in ("bot", "agents", "jobs", "storage", "teammates") for p in sorted((ROOT / d).rglob("*.py")) if p not in skip]


def methods_the_code_calls() -> dict[str, list[str]]:
    """Web API method -> where the code calls it: `client.chat_postMessage(...)`, a method name
    handed to getattr (`_call("chat_postMessage", ...)`), or `api_call("chat.postMessage")`."""
    by_name = _web_api_methods()
    found: dict[str, list[str]] = {}
    for path in _code_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            method = None
            if isinstance(node, ast.Attribute) and node.attr in by_name:
                method = by_name[node.attr]
            elif isinstance(node, ast.Constant) and id(node) not in docstrings and isinstance(node.value, str) and node.value in by_name:
                method = by_name[node.value]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "api_call"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                method = str(node.args[0].value)
            if method:
                found.setdefault(method, []).append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
        if "slack_bolt" in path.read_text(encoding="utf-8"):
            # Listener arguments through which Bolt calls Slack for the code.
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    for arg in node.args.args + node.args.kwonlyargs:
                        for method in BOLT_ARGUMENTS.get(arg.arg, ()):
                            found.setdefault(method, []).append(f"{path.relative_to(ROOT)}:{node.lineno} ({arg.arg})")
    # slack_bolt calls auth.test itself on a single-token app's first request (bot/slack/apps.py).
    found.setdefault("auth.test", []).append("slack_bolt AsyncApp (single-token mode)")
    return found


def events_the_code_listens_to() -> dict[str, list[str]]:
    """Event type -> where a Bolt listener is registered for it (`app.event("message")`,
    `app.event({"type": ...})`, `app.message(...)`), in every module that imports slack_bolt."""
    found: dict[str, list[str]] = {}
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        if "slack_bolt" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if node.func.attr == "message":
                found.setdefault("message", []).append(where)
            elif node.func.attr == "event":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Dict):
                    keys = [k.value if isinstance(k, ast.Constant) else None for k in arg.keys]
                    arg = arg.values[keys.index("type")] if "type" in keys else None
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), \
                    f"{where}: a listener whose event type this test cannot read; name it with a string"
                found.setdefault(arg.value, []).append(where)
    return found


def test_scopes_and_events_are_exactly_what_the_code_uses(tmp_path: Path) -> None:
    called = methods_the_code_calls()
    bot_methods = {m: w for m, w in called.items() if m not in scopes.OTHER_TOKEN_METHODS}
    missing = {m: w for m, w in bot_methods.items() if m not in scopes.METHOD_SCOPES}
    assert not missing, f"called but without a scope entry in bot/slack/scopes.py METHOD_SCOPES: {missing}"
    unused = set(scopes.METHOD_SCOPES) - set(bot_methods)
    assert not unused, f"in METHOD_SCOPES but called nowhere any more (its scope would be asked for nothing): {unused}"
    assert {"chat.postMessage", "conversations.open", "users.info", "reactions.add", "views.open"} <= set(bot_methods)

    listened = events_the_code_listens_to()
    assert set(listened) == set(scopes.EVENT_SUBSCRIPTIONS), \
        f"listeners {listened} vs EVENT_SUBSCRIPTIONS {sorted(scopes.EVENT_SUBSCRIPTIONS)} (bot/slack/scopes.py)"
    assert {"message", "app_mention"} <= set(listened)

    events = {e for kind in listened for e in scopes.EVENT_SUBSCRIPTIONS[kind]}
    expected = {s for m in bot_methods for s in scopes.METHOD_SCOPES[m]} | {s for e in events for s in scopes.EVENT_SCOPES[e]}
    expected.add("commands")  # the member's slash command
    for member in ("nova", "casey"):
        manifest = rendered(tmp_path, member, "--config", str(EXAMPLE))
        assert set(manifest["oauth_config"]["scopes"]["bot"]) == expected
        assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == events
        # the Home tab is on exactly when its opening is listened to
        assert manifest["features"]["app_home"]["home_tab_enabled"] == ("app_home_opened" in events)
    # Slack's own rule, as the fake applies it: every event's scope is asked for.
    for event in events:
        needed = manifest_schema.EVENT_SCOPES.get(event)
        assert needed is None or needed in expected


def test_a_short_or_missing_description_still_gives_a_real_long_description(tmp_path: Path) -> None:
    (tmp_path / "teammates.yml").write_text(
        "members:\n"
        "  - {id: ada, name: Ada, role: Ops}\n"
        "  - {id: bo, name: Bo, role: '', description: Books.}\n"
        f"  - {{id: cy, name: Cy, role: '{'Very long role words ' * 10}', description: '{'Keeps the books tidy. ' * 250}'}}\n"
    )
    for member in ("ada", "bo", "cy"):
        manifest = rendered(tmp_path, member)
        assert_accepted(manifest)
        about = manifest["display_information"]["long_description"]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", about) if s]
        if member != "cy":  # no sentence said twice to reach the length
            assert len(sentences) == len(set(sentences)), about
        assert f"/{member} help" in about
    ada = rendered(tmp_path, "ada")["display_information"]
    assert ada["long_description"].startswith("Ada is the team's AI colleague for Ops.")
    assert ada["description"] == "Ops: an AI member of the team"
    cy = rendered(tmp_path, "cy")["display_information"]
    assert len(cy["long_description"]) <= 4000 and "…" in cy["long_description"]
    assert len(cy["description"]) <= 140


def test_a_socket_mode_member_has_no_request_urls_and_its_own_command(tmp_path: Path) -> None:
    (tmp_path / "teammates.yml").write_text(CONFIG)
    otto = rendered(tmp_path, "ops")  # OTTO_SLACK_APP_TOKEN unset: the app comes before its tokens
    assert_accepted(otto)
    assert otto["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in otto["settings"]["event_subscriptions"]
    assert "request_url" not in otto["settings"]["interactivity"]
    [command] = otto["features"]["slash_commands"]
    assert command["command"] == "/otto" and "url" not in command
    assert "/otto help" in otto["display_information"]["long_description"]
    assert "tells the team what it did" in otto["display_information"]["long_description"]  # autonomy: notify


def test_url_is_required_and_bad_settings_are_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "teammates.yml").write_text(CONFIG)
    for args in (("manifest", "nova"), ("slack", "create-app", "nova")):
        result = cli(tmp_path, *args, env={"SLACK_CONFIG_TOKEN": CONFIG_TOKEN})
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "--url is required" in result.stderr, result.stderr
    bad_url = cli(tmp_path, "manifest", "nova", "--url", "bots.acme.test")
    assert bad_url.returncode == 2 and "--url: expected the public base URL" in bad_url.stderr
    for command in ("/Nova", "nova", "/" + "n" * 32, "/no va"):
        (tmp_path / "teammates.yml").write_text(CONFIG.replace("slash_command: /otto", f"slash_command: '{command}'"))
        result = cli(tmp_path, "manifest", "nova", "--url", BASE)
        assert result.returncode == 2 and "members[ops].slash_command: expected a slash command like /nova" in result.stderr, \
            result.stderr
        assert result.stderr.count("\n") == 1
    (tmp_path / "teammates.yml").write_text("members:\n  - {id: " + "a" * 32 + ", name: A, role: Ops}\n")
    result = cli(tmp_path, "manifest", "a" * 32, "--url", BASE)
    assert result.returncode == 2 and "set members[].slash_command" in result.stderr
    (tmp_path / "teammates.yml").write_text("members:\n  - {id: a, name: " + "A" * 36 + ", role: Ops}\n")
    result = cli(tmp_path, "manifest", "a", "--url", BASE)
    assert result.returncode == 2 and "at most 35 characters for an app name" in result.stderr
    (tmp_path / "teammates.yml").write_text("members:\n  - {id: a, name: ' ', role: Ops}\n")
    result = cli(tmp_path, "manifest", "a", "--url", BASE)
    assert result.returncode == 2 and "members[a].name: Slack needs a name" in result.stderr


def test_create_app_creates_the_app_from_the_manifest_and_prints_the_next_steps(tmp_path: Path, slack: FakeSlack) -> None:
    slack.add_config_token(CONFIG_TOKEN)
    (tmp_path / "teammates.yml").write_text(CONFIG)
    env = {"SLACK_CONFIG_TOKEN": CONFIG_TOKEN, "SLACK_API_URL": slack.base_url}
    result = cli(tmp_path, "--log-level", "DEBUG", "slack", "create-app", "nova", "--url", BASE, env=env)
    assert result.returncode == 0, result.stderr
    [app] = slack.created_apps()
    assert app["manifest"] == rendered(tmp_path, "nova")  # exactly what `manifest` prints
    assert_accepted(app["manifest"])
    out = result.stdout
    assert f"Created the Slack app {app['app_id']} for Nova (nova)" in out
    assert f"https://api.slack.com/apps/{app['app_id']}/install-on-team" in out
    assert "Bot User OAuth Token" in out and "NOVA_SLACK_BOT_TOKEN" in out
    assert "Signing Secret" in out and "NOVA_SLACK_SIGNING_SECRET" in out
    assert "teammates check" in out and "app-level token" not in out
    for secret in (*app["credentials"].values(), CONFIG_TOKEN):  # no credential is printed or logged
        assert secret not in out + result.stderr
    [call] = slack.calls_to("apps.manifest.create")
    assert call["token"] == CONFIG_TOKEN

    socket = cli(tmp_path, "slack", "create-app", "ops", "--url", BASE, env=env)
    assert socket.returncode == 0, socket.stderr
    assert slack.created_apps()[1]["manifest"]["settings"]["socket_mode_enabled"] is True
    assert "connections:write" in socket.stdout and "OTTO_SLACK_APP_TOKEN" in socket.stdout


def test_create_app_errors_are_one_clear_line(tmp_path: Path, slack: FakeSlack) -> None:
    (tmp_path / "teammates.yml").write_text(CONFIG)
    env = {"SLACK_API_URL": slack.base_url}
    unset = cli(tmp_path, "slack", "create-app", "nova", "--url", BASE, env=env)
    assert unset.returncode == 2 and unset.stderr.count("\n") == 1
    assert "${SLACK_CONFIG_TOKEN} (slack.config_token) is not set" in unset.stderr and "app configuration token" in unset.stderr
    (tmp_path / "bare.yml").write_text("members:\n  - {id: nova, name: Nova, role: Finance}\n")
    absent = cli(tmp_path, "--config", "bare.yml", "slack", "create-app", "nova", "--url", BASE, env=env)
    assert absent.returncode == 2 and "slack.config_token is not in the config" in absent.stderr
    assert slack.calls_to("apps.manifest.create") == []

    slack.add_config_token("xoxe.xoxp-1-old", expired=True)
    expired = cli(tmp_path, "slack", "create-app", "nova", "--url", BASE, env={**env, "SLACK_CONFIG_TOKEN": "xoxe.xoxp-1-old"})
    assert expired.returncode == 1 and expired.stderr.count("\n") == 1
    assert "Slack refused slack.config_token (token_expired)" in expired.stderr and "12 hours" in expired.stderr

    # Slack's own validation: a request URL longer than Slack allows (3,500 characters).
    slack.add_config_token(CONFIG_TOKEN)
    long_url = BASE + "/" + "p" * 3500
    refused = cli(tmp_path, "slack", "create-app", "nova", "--url", long_url, env={**env, "SLACK_CONFIG_TOKEN": CONFIG_TOKEN})
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and refused.stdout == ""
    assert "Slack refused the manifest of nova (invalid_manifest): /features/slash_commands/0/url:" in refused.stderr
    assert "/settings/event_subscriptions/request_url:" in refused.stderr
    assert slack.created_apps() == []

    unreachable = cli(tmp_path, "slack", "create-app", "nova", "--url", BASE,
                      env={"SLACK_API_URL": "http://127.0.0.1:9/api/", "SLACK_CONFIG_TOKEN": CONFIG_TOKEN})
    assert unreachable.returncode == 1 and "could not reach Slack at http://127.0.0.1:9/api/" in unreachable.stderr


def test_the_fake_refuses_manifests_as_slack_does(slack: FakeSlack) -> None:
    slack.add_config_token(CONFIG_TOKEN)
    client = WebClient(token=CONFIG_TOKEN, base_url=slack.base_url)
    manifest = {
        "display_information": {"name": "Nova", "long_description": "Too short.", "background_color": "red"},
        "features": {"bot_user": {"display_name": "Nova"}, "slash_commands": [{"command": "nova", "description": "x"}]},
        "oauth_config": {"scopes": {"bot": ["chat:write"]}},
        "settings": {"event_subscriptions": {"bot_events": ["message.im"]}},
    }
    with pytest.raises(SlackApiError) as refused:
        client.apps_manifest_create(manifest=manifest)
    answer = refused.value.response.data
    assert isinstance(answer, dict) and answer["error"] == "invalid_manifest"
    pointers = {e["pointer"] for e in answer["errors"]}
    assert {"/display_information/long_description", "/display_information/background_color",
            "/features/slash_commands/0/command", "/settings/event_subscriptions",
            "/oauth_config/scopes/bot", "/settings/event_subscriptions/bot_events/0"} <= pointers
    with pytest.raises(SlackApiError) as wrong_token:
        WebClient(token="xoxb-nova-0001", base_url=slack.base_url).apps_manifest_create(manifest=manifest)
    assert wrong_token.value.response["error"] == "not_allowed_token_type"


def test_check_says_when_an_installed_app_lacks_scopes_the_manifest_asks_for(stack: Stack) -> None:
    granted = set(scopes.bot_scopes(slash_command=True)) - {"commands", "usergroups:read"}
    stack.slack.set_scopes(NOVA["token"], ",".join(sorted(granted)))  # installed from an older manifest
    result = stack.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr  # a hint, not a failure
    [nova] = [line for line in result.stdout.splitlines() if line.startswith("member nova:")]
    assert "slack ok" in nova and "its app lacks the scopes commands, usergroups:read" in nova
    assert "teammates manifest nova --url BASE" in nova and "reinstall" in nova
    [casey] = [line for line in result.stdout.splitlines() if line.startswith("member casey:")]
    assert "slack ok" in casey and "lacks" not in casey
