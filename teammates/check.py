"""`teammates check`: is everything this config needs reachable? One line per finding."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from slack_sdk.errors import SlackApiError

from bot.slack.channel import web_client
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
            say(f"member {member.id}: slack ok (bot <@{auth.get('user_id')}> in team {auth.get('team')})")
        except SlackApiError as exc:
            ok = False
            code = str(exc.response.get("error"))
            say(f"member {member.id}: slack FAILED: {code}: {_HINTS.get(code, 'Slack refused auth.test')}")
        except Exception as exc:  # noqa: BLE001
            ok = False
            say(f"member {member.id}: slack FAILED: cannot reach {config.slack.api_url} ({type(exc).__name__})")
    return ok
