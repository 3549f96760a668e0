"""`teammates check`: is everything this config needs reachable? One line per finding."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.slack.channel import web_client
from bot.slack.scopes import bot_scopes
from jobs.queues import redis_from_url
from storage.db import Database
from teammates.config import LoadedConfig

_HINTS = {
    "invalid_auth": "the bot token was rejected (wrong or revoked: copy it again from the app's OAuth & Permissions page)",
    "not_authed": "no token was sent",
    "account_inactive": "the token belongs to a deleted app or a deactivated workspace",
    "token_revoked": "the token was revoked (reinstall the app)",
}


async def check(loaded: LoadedConfig, say: Callable[[str], None]) -> bool:
    """Print findings; True when nothing failed (a member not connected is not a failure)."""
    ok = True
    config = loaded.config
    say(f"config: ok ({loaded.path or 'defaults, no file'}; {len(config.members)} member(s))")
    db = Database(config.database_url)
    try:
        await asyncio.wait_for(db.ping(), timeout=10)
        say("database: ok")
    except Exception as exc:  # noqa: BLE001
        ok = False
        say(f"database: FAILED: cannot connect ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    finally:
        await db.close()
    try:
        await asyncio.to_thread(redis_from_url(config.redis_url).ping)
        say("redis: ok")
    except Exception as exc:  # noqa: BLE001
        ok = False
        say(f"redis: FAILED: cannot connect to {config.redis_url.split('@')[-1]} ({type(exc).__name__})")
    for member in config.members:
        gaps = loaded.slack_gaps(member)
        if gaps:
            say(f"member {member.id}: slack not connected ({' and '.join(gaps)} not set); `teammates chat {member.id}` still works")
            continue
        assert member.slack and member.slack.bot_token
        client = web_client(member.slack.bot_token, config.slack.api_url)
        try:
            auth = await client.auth_test()
            say(f"member {member.id}: slack ok (bot <@{auth.get('user_id')}> in team {auth.get('team')})"
                + _missing_scopes(member.id, auth.headers))
        except Exception as exc:  # noqa: BLE001 - every failure is one line, never a traceback
            ok = False
            say(f"member {member.id}: slack FAILED: {_slack_failure(exc, config.slack.api_url)}")
    _report_tools(loaded, say)
    return await _check_llm(loaded, say) and ok


def _missing_scopes(member_id: str, headers: Mapping[str, Any]) -> str:
    """"; its app lacks ..." when the install granted fewer scopes than the member's manifest
    asks for (an app created from an older manifest): not a failure — what needs them fails
    on its own — but the fix is one reinstall."""
    granted_header = next((v for k, v in headers.items() if k.lower() == "x-oauth-scopes"), None)
    if not isinstance(granted_header, str):
        return ""  # Slack did not say: nothing to compare
    granted = {s.strip() for s in granted_header.split(",")}
    missing = [s for s in bot_scopes(slash_command=True) if s not in granted]
    if not missing:
        return ""
    return (f"; its app lacks the scopes {', '.join(missing)}: update the app's manifest from "
            f"`teammates manifest {member_id} --url BASE` and reinstall it")


def _report_tools(loaded: LoadedConfig, say: Callable[[str], None]) -> None:
    """Business tools (already validated on load): which are there, and which cannot be
    called yet because a `${VAR}` they need is unset (not a failure, like a member not
    connected to Slack)."""
    config = loaded.config
    names = [t.name for t in config.tools] + (["send_email"] if config.email is not None else [])
    if not names:
        return
    say(f"tools: {', '.join(names)}")
    for index, tool in enumerate(config.tools):
        missing = sorted({var for key, var in loaded.unset.items() if key.startswith(f"tools.{index}.")})
        if missing:
            say(f"tool {tool.name}: not set up ({', '.join('${' + v + '}' for v in missing)} not set)")
    missing = sorted({var for key, var in loaded.unset.items() if key.startswith("email.")})
    if missing:
        say(f"tool send_email: not set up ({', '.join('${' + v + '}' for v in missing)} not set)")


def _slack_failure(exc: BaseException, api_url: str) -> str:
    """What went wrong with `auth.test`, for a person: Slack's error code with a hint, or what
    came back instead of Slack's JSON (a proxy's error page, a wrong `slack.api_url`)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        data = getattr(response, "data", None)
        if isinstance(data, dict) and data.get("error"):
            code = str(data["error"])
            return f"{code}: {_HINTS.get(code, 'Slack refused auth.test')}"
        # slack_sdk hands over the raw HTTP response when the body was not JSON at all.
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        return f"{api_url} answered HTTP {status} without Slack's JSON (is slack.api_url right, or a proxy in the way?)"
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return f"cannot reach {api_url} ({type(exc).__name__})"
    return f"{api_url} gave an answer that is not Slack's ({type(exc).__name__}; is slack.api_url right?)"


async def _check_llm(loaded: LoadedConfig, say: Callable[[str], None]) -> bool:
    """Ask the models API for the configured model: proves the key is accepted (and the model
    known) without spending tokens. The key itself is never printed."""
    import anthropic

    model = loaded.config.llm.model
    if not os.environ.get("ANTHROPIC_API_KEY"):
        say("LLM: FAILED: ANTHROPIC_API_KEY is not set")
        return False
    client = anthropic.AsyncAnthropic(timeout=min(loaded.config.llm.timeout, 15.0), max_retries=1)
    where = str(client.base_url).rstrip("/")
    try:
        await client.models.retrieve(model)
    except anthropic.AuthenticationError:
        say(f"LLM: FAILED: the key was rejected by {where} (check ANTHROPIC_API_KEY)")
        return False
    except anthropic.PermissionDeniedError:
        say(f"LLM: FAILED: the key is not allowed to use {where} (permission denied)")
        return False
    except anthropic.NotFoundError:
        say(f"LLM: FAILED: key accepted, but model {model!r} is unknown at {where} (llm.model or TEAMMATES_MODEL)")
        return False
    except anthropic.APIStatusError as exc:
        say(f"LLM: FAILED: {where} answered HTTP {exc.status_code}")
        return False
    except anthropic.APIConnectionError as exc:
        say(f"LLM: FAILED: cannot reach {where} ({type(exc).__name__})")
        return False
    except Exception as exc:  # noqa: BLE001 - an answer the SDK could not read
        say(f"LLM: FAILED: {where} gave an unexpected answer ({type(exc).__name__})")
        return False
    finally:
        await client.close()
    say(f"LLM: key accepted (model {model} at {where})")
    return True
