"""`/nova config`: the one subcommand answered in the web process, because it opens a form and
the platform's trigger for that lives seconds. It only reads; the form's submission comes back
as an action like any other."""

from __future__ import annotations

from agents.channels import Channel
from agents.messages import COMMAND_ACTION, Form, InboundAction
from jobs.people import People
from storage.db import Database
from teammates.config import Config

FORM_SUBCOMMANDS = frozenset({"config"})


def subcommand(action: InboundAction) -> str:
    """The first word of a command's text, lower case ("help" when there is none)."""
    words = action.object_id.split()
    return words[0].lower() if words else "help"


def opens_form(action: InboundAction) -> bool:
    return action.action == COMMAND_ACTION and subcommand(action) in FORM_SUBCOMMANDS


async def form_for(db: Database, config: Config, action: InboundAction, channel: Channel | None) -> Form | str:
    """The form `/nova config` opens for an admin, or the sentence that answers instead."""
    command = next((m.command for m in config.members if m.id == action.member_id), f"/{action.member_id}")
    if not await People.from_config(config).may_administer(action.user_id, action.platform, channel):
        return f"Only an admin can use `{command} config`."
    from jobs import (
        member_settings,  # its form: role, description, persona, autonomy, channels, time zone, budget
    )

    return await member_settings.form_for(db, config, action.member_id, action.user_id, action.platform, channel)
