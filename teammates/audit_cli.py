"""`teammates audit export`: the audit trail of a period (`jobs.audit`) as JSON lines or CSV on
stdout, one record per line, oldest first."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from jobs import audit
from teammates.config import ConfigError, LoadedConfig
from teammates.runtime import opened

FORMATS = ("jsonl", "csv")


def since_of(value: str, zone: str) -> datetime:
    """`--since`: a date (midnight of the workspace's time zone) or an ISO 8601 moment."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since: expected a date (YYYY-MM-DD) or an ISO 8601 time, got {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).astimezone(UTC)


async def export(loaded: LoadedConfig, since: str, fmt: str, out: TextIO | None = None) -> int:
    """Write every record from `since` on; returns how many."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    start = since_of(since, loaded.config.workspace.timezone)
    async with opened(loaded) as db:
        async with db.session() as session:
            found = await audit.records(session, start)
    stream = out or sys.stdout
    write: Callable[[dict[str, object]], object]
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=list(audit.COLUMNS), lineterminator="\n")
        writer.writeheader()
        write = writer.writerow
    else:
        write = lambda record: stream.write(json.dumps(record, ensure_ascii=False) + "\n")  # noqa: E731
    for record in found:
        write(record.as_dict())
    return len(found)
