"""Slack's published app manifest JSON Schema (tests/data/slack-manifest-schema, MIT, from
slackapi/manifest-schema v0.5.0) and the few rules Slack checks beyond it, as Slack words them.

`problems(manifest)` is what the fake's `apps.manifest.create` answers with, and what the
manifest tests assert is empty. The entry schema `$ref`s the versioned schemas by their
raw.githubusercontent.com URLs: they are served from the local copies, never fetched.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource

DATA = Path(__file__).resolve().parent.parent / "data" / "slack-manifest-schema"
TAG = "v0.5.0"
_REMOTE = f"https://raw.githubusercontent.com/slackapi/manifest-schema/{TAG}/schemas/"
VERSIONS = {1: "manifest.schema.1.0.0.json", 2: "manifest.schema.2.0.0.json"}

# The schema spells this rule `"regex"`, which is no JSON Schema keyword (validators skip it);
# Slack's own validation applies it.
_COLOR = re.compile(r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")

# Scopes Slack requires for a bot event subscription (its event reference, "Required scopes").
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "reaction_added": "reactions:read",
    "reaction_removed": "reactions:read",
}


def _load(name: str) -> dict[str, Any]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@functools.cache
def validator() -> Draft7Validator:
    """The entry schema (all versions), as Slack publishes it for `$schema`."""
    registry: Registry[Any] = Registry().with_resources(
        (_REMOTE + name, Resource.from_contents(_load(name))) for name in VERSIONS.values()
    )
    return Draft7Validator(_load("manifest.schema.json"), registry=registry)


@functools.cache
def _version_validator(major: int) -> Draft7Validator:
    return Draft7Validator(_load(VERSIONS[major]))


def problems(manifest: Any) -> list[dict[str, str]]:
    """Slack's `errors` for this manifest: [{"message", "pointer"}], empty when it is valid."""
    if not isinstance(manifest, dict):
        return [{"message": "The manifest must be an object", "pointer": "/"}]
    found: list[dict[str, str]] = []
    if not validator().is_valid(manifest):
        # The entry schema's oneOf reports "valid under none": the versioned schema the
        # manifest's _metadata selects says where and why.
        major = (manifest.get("_metadata") or {}).get("major_version", 1) if isinstance(manifest.get("_metadata"), dict) else 1
        detail = _version_validator(major if major in VERSIONS else 1)
        for error in sorted(detail.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
            found.append({"message": error.message, "pointer": _pointer(error.absolute_path)})
        if not found:
            found.append({"message": "The manifest does not match any manifest version", "pointer": "/_metadata"})
    found.extend(_slack_rules(manifest))
    return found


def _slack_rules(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """What Slack checks beyond the schema (apps.manifest.validate's documented messages)."""
    out: list[dict[str, str]] = []
    display = manifest.get("display_information") or {}
    color = display.get("background_color") if isinstance(display, dict) else None
    if isinstance(color, str) and not _COLOR.match(color):
        out.append({"message": "Must be a hex color code like #4A154B", "pointer": "/display_information/background_color"})
    settings = manifest.get("settings") or {}
    features = manifest.get("features") or {}
    if not isinstance(settings, dict) or not isinstance(features, dict):
        return out
    socket = bool(settings.get("socket_mode_enabled"))
    events = settings.get("event_subscriptions")
    if isinstance(events, dict) and not socket and not events.get("request_url"):
        out.append({"message": "Event Subscription requires either Request URL or Socket Mode Enabled",
                    "pointer": "/settings/event_subscriptions"})
    interactivity = settings.get("interactivity")
    if isinstance(interactivity, dict) and interactivity.get("is_enabled") and not socket and not interactivity.get("request_url"):
        out.append({"message": "Interactivity requires a Request URL", "pointer": "/settings/interactivity"})
    scopes = set(((manifest.get("oauth_config") or {}).get("scopes") or {}).get("bot") or [])
    commands = features.get("slash_commands") or []
    for i, command in enumerate(commands if isinstance(commands, list) else []):
        if isinstance(command, dict) and not socket and not command.get("url"):
            out.append({"message": "Slash commands require a Request URL or Socket Mode Enabled", "pointer": f"/features/slash_commands/{i}"})
        if isinstance(command, dict) and command.get("command") != str(command.get("command", "")).lower():
            out.append({"message": "Command names must be lowercase", "pointer": f"/features/slash_commands/{i}/command"})
    if commands and "commands" not in scopes:
        out.append({"message": "Slash commands require the commands scope", "pointer": "/oauth_config/scopes/bot"})
    if (features.get("bot_user") is None) and (scopes or (isinstance(events, dict) and events.get("bot_events"))):
        out.append({"message": "Bot scopes and events require a bot user", "pointer": "/features/bot_user"})
    bot_events = events.get("bot_events") or [] if isinstance(events, dict) else []
    for i, event in enumerate(bot_events):
        needed = EVENT_SCOPES.get(event)
        if needed and needed not in scopes:
            out.append({"message": f"Event {event} requires the {needed} scope", "pointer": f"/settings/event_subscriptions/bot_events/{i}"})
    return out


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p) for p in path)
