"""Who a virtual member is, as the core sees it: identity, role, persona, tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Workspace:
    """The business context every member works in."""

    name: str
    locale: str
    timezone: str
    currency: str


@dataclass(frozen=True)
class MemberProfile:
    id: str
    name: str
    role: str
    description: str = ""
    persona: str = ""
    tools: tuple[str, ...] = field(default_factory=tuple)
    autonomy: str = "approve"
    status: str = "active"  # active | paused
    approvals_channel: str | None = None
    activity_channel: str | None = None
    timezone: str | None = None
    paused_by: str | None = None  # who paused it (a person id, else a platform user id), while paused
    paused_at: datetime | None = None
