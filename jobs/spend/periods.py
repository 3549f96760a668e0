"""Budget periods: a day or a month of the workspace's time zone.

A period is named by its key (`2026-12-02`, `2026-12`); the ledger keeps one row per scope
and key, so a new period starts from nothing without any job resetting anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def key(period: str, zone: str, now: datetime | None = None) -> str:
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m}" if period == "month" else f"{local:%Y-%m-%d}"


def resets_at(period: str, zone: str, now: datetime | None = None) -> datetime:
    """When the period holding `now` ends (the next one starts), in the zone's wall time."""
    tz = ZoneInfo(zone)
    local = (now or datetime.now(UTC)).astimezone(tz)
    if period == "month":
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return datetime(year, month, 1, tzinfo=tz)
    following = local.date() + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=tz)


def words(when: datetime, now: datetime | None = None) -> str:
    """'at midnight tonight (Europe/Amsterdam)' / 'on 1 January 2027 at 00:00 (Europe/Amsterdam)'."""
    zone = getattr(when.tzinfo, "key", str(when.tzinfo))
    local_now = (now or datetime.now(UTC)).astimezone(when.tzinfo)
    if when.date() == local_now.date() + timedelta(days=1) and when.hour == 0 and when.minute == 0:
        return f"at midnight tonight ({zone} time)"
    return f"on {when.day} {when:%B %Y} at {when:%H:%M} ({zone} time)"
