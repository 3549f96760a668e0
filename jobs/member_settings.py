"""A member's settings changed from chat (`/nova config`): a form, and its submission.

Invariants:
- Only an admin may open or submit it (checked here, for the click and again for the
  submission: a form can be submitted long after it was opened).
- Every value is checked before anything is written; one bad value changes nothing, and the
  person is told which field and why.
- What is written wins over the config file until the file's own value for that setting
  changes (`storage.members.seed` compares with `file_values`; budgets with `file_value`).
- Every process sees the change within seconds (`jobs.team` re-reads members; budgets are read
  at each call). Each changed setting is a line in the activity feed, with who changed it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from agents.channels import Channel, ChannelError
from agents.messages import Form, FormInput, InboundAction
from jobs import team
from jobs.people import People
from jobs.runtime import Runtime
from storage import activity, budgets, members
from storage.budgets import Limit
from storage.db import Database
from storage.models import Member
from teammates.config import Config

log = logging.getLogger(__name__)

CONFIG_FORM = "member.config"
_CHANNEL = re.compile(r"^(?:<#)?([CGD][A-Z0-9]{2,30})(?:\|[^>]*)?>?$")
_BUDGET = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*(tokens?|[A-Za-z]{3})?\s*(?:/|per|a)\s*(day|month)\s*$", re.IGNORECASE)
AUTONOMY = ("notify", "approve", "auto")


@dataclass(frozen=True)
class Settings:
    role: str
    description: str
    persona: str
    autonomy: str
    approvals_channel: str | None
    activity_channel: str | None
    timezone: str | None
    budget: Limit | None


async def form_for(db: Database, config: Config, member_id: str, user_id: str, platform: str = "slack",
                   channel: Channel | None = None) -> Form | str:
    """The settings form, filled with the member's current values; or why it is not offered."""
    if not await People.from_config(config).may_administer(user_id, platform, channel):
        return "Only an admin can change my settings."
    async with db.session() as session:
        profile = await members.profile(session, member_id)
        limit = (await budgets.limits(session)).get(f"member:{member_id}")
    if profile is None:
        return f"There is no member {member_id}."
    currency = config.workspace.currency
    return Form(
        title=f"{profile.name}'s settings"[:24],
        object_id=member_id,
        submit_action=CONFIG_FORM,
        submit_label="Save",
        text=f"What {profile.name} is and may do. A change here wins over the config file until the file's own value changes.",
        inputs=(
            FormInput("role", "Role", profile.role, multiline=False, max_length=200),
            FormInput("description", "Description", profile.description, optional=True, max_length=2000),
            FormInput("persona", "Persona (how it talks, its boundaries)", profile.persona, optional=True, max_length=3000),
            FormInput("autonomy", "Default autonomy: notify, approve or auto", profile.autonomy, multiline=False, max_length=10),
            FormInput("approvals_channel", "Approvals channel (id, e.g. C0123ABCD)", profile.approvals_channel or "",
                      multiline=False, optional=True, max_length=40),
            FormInput("activity_channel", "Activity channel (id)", profile.activity_channel or "", multiline=False,
                      optional=True, max_length=40),
            FormInput("timezone", "Time zone (IANA, e.g. Europe/Amsterdam)", profile.timezone or "", multiline=False,
                      optional=True, max_length=64),
            FormInput("budget", f"Budget, e.g. 150 {currency}/month or 400000 tokens/day", _budget_text(limit, currency),
                      multiline=False, optional=True, max_length=60),
        ),
    )


def parse(values: dict[str, str], member_id: str, by: str, currency: str) -> Settings:
    """The submitted values, checked; ValueError names the first bad field."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    def text(key: str) -> str:
        return (values.get(key) or "").strip()

    role = text("role")
    if not role:
        raise ValueError("Role: a role is needed (e.g. Finance & Admin)")
    autonomy = text("autonomy").lower()
    if autonomy not in AUTONOMY:
        raise ValueError(f"Default autonomy: one of notify, approve or auto, not {autonomy!r}")
    channels = {}
    for key, label in (("approvals_channel", "Approvals channel"), ("activity_channel", "Activity channel")):
        raw = text(key)
        match = _CHANNEL.match(raw) if raw else None
        if raw and match is None:
            raise ValueError(f"{label}: a channel id such as C0123ABCD, not {raw!r}")
        channels[key] = match.group(1) if match else None
    zone = text("timezone") or None
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"Time zone: an IANA name such as Europe/Amsterdam, not {zone!r}") from None
    return Settings(role=role, description=text("description"), persona=text("persona"), autonomy=autonomy,
                    approvals_channel=channels["approvals_channel"], activity_channel=channels["activity_channel"],
                    timezone=zone, budget=_parse_budget(text("budget"), member_id, by, currency))


async def submit(rt: Runtime, action: InboundAction) -> str:
    """Apply a submitted settings form (admins only); a private word on what changed."""
    config = rt.loaded.config
    channel = rt.channels(action.platform, action.member_id)
    member_id = action.object_id
    if not await People.from_config(config).may_administer(action.user_id, action.platform, channel):
        await _tell(channel, action, "Only an admin can change my settings; nothing changed.")
        return "refused: not an admin"
    try:
        wanted = parse(action.values or {}, member_id, action.user_id, config.workspace.currency)
    except ValueError as exc:
        await _tell(channel, action, f"Nothing changed. {exc}.")
        return f"refused: {exc}"
    async with rt.db.session() as session:
        row = await session.get(Member, member_id)
        if row is None:
            return "no such member"
        before: dict[str, Any] = {"role": row.role, "description": row.description, "persona": row.persona,
                                  "autonomy": row.autonomy, "timezone": row.timezone,
                                  "channels": {k: v for k, v in (row.channels or {}).items() if v}}
        after: dict[str, Any] = {"role": wanted.role, "description": wanted.description, "persona": wanted.persona,
                                 "autonomy": wanted.autonomy, "timezone": wanted.timezone,
                                 "channels": {k: v for k, v in (("approvals", wanted.approvals_channel),
                                                                ("activity", wanted.activity_channel)) if v}}
        changed = [k for k in after if after[k] != before[k]]
        if changed:
            await session.execute(update(Member).where(Member.id == member_id).values(**{k: after[k] for k in changed}))
        old_limit = (await budgets.limits(session)).get(f"member:{member_id}")
        if wanted.budget is not None and (old_limit is None or (old_limit.metric, old_limit.amount, old_limit.period)
                                          != (wanted.budget.metric, wanted.budget.amount, wanted.budget.period)):
            await budgets.set_limit(session, wanted.budget)
            changed.append("budget")
        for key in changed:
            shown_before = _budget_text(old_limit, config.workspace.currency) if key == "budget" else before[key]
            shown_after = _budget_text(wanted.budget, config.workspace.currency) if key == "budget" else after[key]
            await activity.record(session, member_id=member_id, actor_type="person", actor_id=action.user_id,
                                  action="member.config", description=f"{channel.mention(action.user_id)} changed {member_id}'s "
                                  f"{key.replace('_', ' ')}: {_short(shown_before)} → {_short(shown_after)}",
                                  entity_type="member", entity_id=member_id, details={"setting": key})
    team.forget(rt.db)
    names = ", ".join(k.replace("_", " ") for k in changed)
    await _tell(channel, action, f"Saved: {names}. Every part of the team uses it within seconds." if changed else "Nothing changed.")
    return f"changed {names or 'nothing'}"


def _parse_budget(raw: str, member_id: str, by: str, currency: str) -> Limit | None:
    if not raw:
        return None
    match = _BUDGET.match(raw)
    if match is None:
        raise ValueError(f"Budget: like 150 {currency}/month or 400000 tokens/day, not {raw!r}")
    amount = float(match.group(1).replace(",", "").replace("_", ""))
    unit = (match.group(2) or "").lower()
    metric = "tokens" if unit.startswith("token") else "cost"
    if metric == "cost" and unit and unit != currency.lower():
        raise ValueError(f"Budget: in {currency} (the workspace currency) or in tokens, not {match.group(2)}")
    return Limit(f"member:{member_id}", metric, float(int(amount)) if metric == "tokens" else amount, match.group(3).lower(), by)


def _budget_text(limit: Limit | None, currency: str) -> str:
    if limit is None:
        return ""
    amount = f"{int(limit.amount)} tokens" if limit.metric == "tokens" else f"{limit.amount:g} {currency}"
    return f"{amount}/{limit.period}"


def _short(value: Any) -> str:
    text = str(value) if value not in (None, "", {}) else "(none)"
    return text if len(text) <= 60 else text[:57] + "..."


async def _tell(channel: Any, action: InboundAction, text: str) -> None:
    try:
        if action.where is not None:
            await channel.notice(action.where, action.user_id, text)
        else:
            await channel.notify(action.user_id, text)
    except ChannelError as exc:
        log.info("settings notice not sent: %s", exc.code, extra={"member": action.member_id})
