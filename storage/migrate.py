"""Apply the Alembic migrations that ship inside the package (`teammates migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("teammates.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`. Safe to run again: Alembic skips what is done.

    Alembic's env runs its own event loop, so call this from synchronous code (or a thread)."""
    command.upgrade(alembic_config(url), revision)
