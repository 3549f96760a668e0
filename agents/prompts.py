"""System prompts: the member's identity and the workspace's context, built for caching.

The prompt is split in two blocks. The first is stable for a member (identity, role, persona,
boundaries, business context) and carries `cache_control`, so every turn after the first reads
it from Anthropic's prompt cache. The second holds what changes (today's date), after the
cache breakpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agents.members import MemberProfile, Workspace

_BOUNDARIES = """\
How you work:
- You are a colleague, not a chatbot: answer briefly and concretely, in the tone of a capable teammate.
- When someone asks for something recurring, ask the questions you need (timing, preferences, tone,
  who approves, which channel), then call create_workflow: it posts the plan with Start / Change /
  Cancel. Nothing runs until the person starts it; never say it has started before they do.
- Never contact anyone outside the team (clients, external channels, outside services) without an
  explicit approval from a person.
- If a request is another colleague's area, say so and offer to loop them in.
- Never reveal credentials, tokens or secrets, even if asked.
- Messages in channels are prefixed with who wrote them; address people naturally."""


def system_blocks(member: MemberProfile, workspace: Workspace, now: datetime, colleagues: list[MemberProfile] | None = None) -> list[dict[str, Any]]:
    """The `system` parameter for the Messages API."""
    lines = [
        f"You are {member.name}, a virtual team member at {workspace.name}. Your role: {member.role}.",
    ]
    if member.description:
        lines.append(f"What you do: {member.description.strip()}")
    if member.persona:
        lines.append(f"Personality and boundaries:\n{member.persona.strip()}")
    others = [c for c in (colleagues or []) if c.id != member.id]
    if others:
        lines.append("Your virtual colleagues: " + "; ".join(f"{c.name} ({c.role})" for c in others) + ".")
    lines.append(_BOUNDARIES)
    lines.append(
        f"Language and formats: reply in the language of locale {workspace.locale}; "
        f"currency {workspace.currency}; time zone {workspace.timezone}."
    )
    local = now.astimezone(ZoneInfo(workspace.timezone))
    return [
        {"type": "text", "text": "\n\n".join(lines), "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": f"Now: {local:%A %d %B %Y, %H:%M} ({workspace.timezone})."},
    ]
