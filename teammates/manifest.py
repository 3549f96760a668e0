"""`teammates manifest MEMBER --url BASE`: the Slack app manifest for one member, from `teammates/manifest.yml`.

Invariants (tests/test_manifest.py checks them against Slack's published manifest schema):
- it is accepted as pasted: every text fits Slack's lengths — the name at most 35 characters
  (a longer member name is a config error, never cut), the description at most 140, the long
  description between 175 and 4,000, written from the member's role, description, autonomy
  and slash command (a short description still gives a real one, never filler);
- its bot scopes and events are exactly those the code uses (`bot.slack.scopes`), plus
  `commands` for the member's slash command;
- a Socket Mode member (with an `app_token`, set or still a `${VAR}`) has no request URLs; every other has one URL,
  `BASE/slack/<id>/events`, for events, interactivity and its slash command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from bot.slack.scopes import bot_events, bot_scopes
from teammates.config import SLASH_COMMAND, ConfigError, LoadedConfig, MemberConfig

TEMPLATE = Path(__file__).resolve().parent / "manifest.yml"  # package data (pyproject: teammates/*.yml)

# Slack's limits (slackapi/manifest-schema, display_information).
NAME_MAX = 35
DESCRIPTION_MAX = 140
LONG_DESCRIPTION_MIN = 175
LONG_DESCRIPTION_MAX = 4000

SUBCOMMANDS = ("help", "status", "workflows", "runs", "approvals", "activity", "usage")
ADMIN_SUBCOMMANDS = ("pause", "resume", "config", "team")

_AUTONOMY = {
    "approve": "asks a person to approve, with Approve and Reject buttons, before anything that "
               "leaves the team, such as an email to a client",
    "notify": "acts within the tools an admin gave it and tells the team what it did",
    "auto": "acts on its own within the tools and limits an admin set, and keeps an activity log",
}


def render(loaded: LoadedConfig, member_id: str, url: str | None) -> str:
    """The manifest as YAML text, ready to paste into Slack's *From an app manifest*."""
    member = loaded.config.member(member_id)
    if not url:
        raise ConfigError("manifest: --url is required: the public base URL of `teammates serve`, like "
                          "https://bots.example.com (Slack sends the member's events there)")
    if not url.startswith(("https://", "http://")) or any(c in url for c in "?# \t\n"):
        raise ConfigError(f"--url: expected the public base URL of `teammates serve`, like https://bots.example.com (got {url!r})")
    if not member.name.strip():
        raise ConfigError(f"members[{member.id}].name: Slack needs a name for the app (found none)")
    if len(member.name) > NAME_MAX:
        raise ConfigError(f"members[{member.id}].name: Slack allows at most {NAME_MAX} characters for an app name "
                          f"(found {len(member.name)})")
    command = member.command
    if not SLASH_COMMAND.match(command):
        raise ConfigError(f"members[{member.id}]: the default slash command {command} is longer than Slack's 32 "
                          "characters: set members[].slash_command, like /nova")
    if not TEMPLATE.exists():
        raise ConfigError(f"{TEMPLATE}: the manifest template is missing from this installation")
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["str"] = _yaml_string
    text = env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        member=member,
        url=url.rstrip("/"),
        socket_mode=socket_mode(loaded, member),
        description=short_description(member),
        long_description=long_description(member),
        command=command,
        command_description=f"{member.name}: status, workflows, runs, approvals, activity and usage",
        usage_hint=usage_hint(),
        bot_scopes=bot_scopes(slash_command=True),
        bot_events=bot_events(),
    )
    yaml.safe_load(text)  # a template edit that breaks YAML fails here, not in Slack's UI
    return text


def manifest(loaded: LoadedConfig, member_id: str, url: str | None) -> dict[str, Any]:
    """The manifest as data (what `apps.manifest.create` takes as JSON)."""
    data = yaml.safe_load(render(loaded, member_id, url))
    assert isinstance(data, dict)
    return data


def socket_mode(loaded: LoadedConfig, member: MemberConfig) -> bool:
    """A member with an `app_token` uses Socket Mode — also while its `${VAR}` is still unset:
    the app is created before its tokens exist."""
    index = loaded.config.members.index(member)
    return bool(member.slack and member.slack.app_token) or loaded.variable("members", index, "slack", "app_token") is not None


def short_description(member: MemberConfig) -> str:
    """"<role>: an AI member of the team", the role cut at a word when it would not fit."""
    suffix = ": an AI member of the team"
    role = " ".join(member.role.split())
    if not role:
        return "An AI member of the team"
    return _cut(role, DESCRIPTION_MAX - len(suffix)) + suffix


def long_description(member: MemberConfig) -> str:
    """What a person reads on the app's About page: who the member is (role, description), how
    to reach it (DM, @mention, its slash command) and what it does on its own (workflows, and
    approvals or notices by its autonomy). Always at least 175 characters without padding: the
    fixed sentences alone are longer; a long description is cut at a word to fit 4,000."""
    name = member.name
    role = " ".join(member.role.split())
    who = f"{name} is the team's AI colleague for {role}." if role else f"{name} is an AI colleague on the team."
    how = (f"Send {name} a direct message, or @mention it in a channel and it answers in a thread; it works "
           f"with the tools an admin gave it. It can also run recurring workflows (on a schedule, on a webhook "
           f"or on demand) and {_AUTONOMY[member.autonomy]}.")
    command = (f"Type {member.command} help to see its status, workflows and recent runs, your pending approvals, "
               f"its activity and its usage.")
    about = " ".join(member.description.split())
    if about and about[-1] not in ".!?":
        about += "."
    room = LONG_DESCRIPTION_MAX - len(who) - len(how) - len(command) - 3
    parts = [_cut(about, room) if about else "", who, how, command]
    return " ".join(p for p in parts if p)


def usage_hint() -> str:
    return " | ".join(SUBCOMMANDS[:3]) + " | runs WORKFLOW | " + " | ".join(SUBCOMMANDS[4:]) + \
        " — admins: " + " | ".join(ADMIN_SUBCOMMANDS)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return cut + "…"


def _yaml_string(value: Any) -> str:
    """A double-quoted YAML scalar: JSON's escapes are YAML's, and text stays readable (no
    `\\u0026` for `&`); characters YAML does not allow raw are escaped."""
    text = json.dumps(str(value), ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in text)
