"""`teammates slack create-app MEMBER --url BASE`: create the member's Slack app from its
manifest with `apps.manifest.create`, then print what is left to do by hand.

Needs `slack.config_token`, an app configuration token (api.slack.com/apps → *Your App
Configuration Tokens*; it lasts 12 hours). Slack answers with the new app's credentials, its
signing secret among them: none is printed or logged (secrets never in outputs) — the steps say
where to copy them from and which environment variable the config reads each from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.client import WebClient

from teammates.config import ConfigError, LoadedConfig, MemberConfig
from teammates.manifest import manifest, socket_mode

TOKEN_HELP = "https://api.slack.com/apps → Your App Configuration Tokens → Generate Token"
_TOKEN_ERRORS = {"invalid_auth", "not_authed", "token_expired", "token_revoked", "not_allowed_token_type", "account_inactive"}


class SlackRefused(Exception):
    """Slack did not create the app; the message is one line naming why."""


def create_app(loaded: LoadedConfig, member_id: str, url: str | None, out: Callable[[str], None]) -> str:
    """Create the app; returns its id. ConfigError (exit 2) before Slack is asked: no config
    token, an unknown member, a bad --url. SlackRefused (exit 1): Slack's answer was no."""
    member = loaded.config.member(member_id)
    token = loaded.config.slack.config_token
    if not token:
        variable = loaded.variable("slack", "config_token")
        where = (f"${{{variable}}} (slack.config_token) is not set" if variable
                 else "slack.config_token is not in the config (add `slack: {config_token: ${SLACK_CONFIG_TOKEN}}`)")
        raise ConfigError(f"slack create-app: {where}: it needs an app configuration token ({TOKEN_HELP}); "
                          f"or paste `teammates manifest {member_id} --url ...` into Slack yourself")
    data = manifest(loaded, member_id, url)
    api_url = loaded.config.slack.api_url
    client = WebClient(token=token, base_url=api_url, timeout=30)
    try:
        response = client.apps_manifest_create(manifest=data)
    except SlackApiError as exc:
        raise SlackRefused(_refusal(member_id, exc.response.data if isinstance(exc.response.data, dict) else {})) from None
    except OSError as exc:  # URLError, timeouts, refused connections
        raise SlackRefused(f"slack create-app: could not reach Slack at {api_url} ({type(exc).__name__}: "
                           f"{_one_line(str(getattr(exc, 'reason', exc)))})") from None
    app_id = str(response["app_id"])
    for line in _next_steps(loaded, member, app_id):
        out(line)
    return app_id


def _refusal(member_id: str, answer: dict[str, Any]) -> str:
    error = str(answer.get("error") or "unknown_error")
    if error == "invalid_manifest":
        found = [f"{e.get('pointer') or '/'}: {_one_line(str(e.get('message') or ''))}"
                 for e in answer.get("errors") or [] if isinstance(e, dict)]
        return f"slack create-app: Slack refused the manifest of {member_id} (invalid_manifest): " + ("; ".join(found) or "no details")
    if error in _TOKEN_ERRORS:
        return (f"slack create-app: Slack refused slack.config_token ({error}); app configuration tokens last 12 hours: "
                f"generate a new one ({TOKEN_HELP})")
    return f"slack create-app: Slack did not create the app of {member_id} ({error})"


def _next_steps(loaded: LoadedConfig, member: MemberConfig, app_id: str) -> list[str]:
    index = loaded.config.members.index(member)
    socket = socket_mode(loaded, member)

    def into(key: str) -> str:
        variable = loaded.variable("members", index, "slack", key)
        if variable:
            return f"the environment variable {variable}"
        return f"members[{member.id}].slack.{key} (better: `{key}: ${{{member.id.upper().replace('-', '_')}_SLACK_{key.upper()}}}` and the environment)"

    settings = f"https://api.slack.com/apps/{app_id}"
    steps = [
        f"Created the Slack app {app_id} for {member.name} ({member.id}). Remaining steps:",
        f"  1. Install it to the workspace: {settings}/install-on-team → Install to Workspace → Allow.",
        f"  2. Copy the Bot User OAuth Token (xoxb-…, on OAuth & Permissions) into {into('bot_token')}.",
        f"  3. Copy the Signing Secret (Basic Information → App Credentials) into {into('signing_secret')}.",
    ]
    if socket:
        steps.append(f"  4. Create an app-level token with the connections:write scope (Basic Information → App-Level Tokens) "
                     f"and put it into {into('app_token')}.")
    steps.append(f"  {len(steps)}. Restart teammates, then `teammates check` should say: member {member.id}: slack ok.")
    return steps


def _one_line(text: str) -> str:
    return " ".join(text.split())
