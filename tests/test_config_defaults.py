"""`${VAR:-default}` in teammates.yml: the shipped tools reach the example API on a fresh
machine, and the variable still wins once it is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from teammates.config import ConfigError, load

CONFIG = """\
redis_url: "${REDIS_URL_FOR_TEST:-redis://127.0.0.1:6390/0}"
slack: {api_url: "${SLACK_BASE_FOR_TEST:-http://127.0.0.1:8765/api/}"}
database_url: "${DB_FOR_TEST}"
"""


def test_a_default_is_used_when_the_variable_is_unset_or_empty(tmp_path: Path) -> None:
    path = tmp_path / "teammates.yml"
    path.write_text(CONFIG)

    loaded = load(str(path), env={"DB_FOR_TEST": "sqlite:///x.db", "SLACK_BASE_FOR_TEST": ""})
    assert loaded.config.redis_url == "redis://127.0.0.1:6390/0"
    assert loaded.config.slack.api_url == "http://127.0.0.1:8765/api/"
    assert loaded.unset == {}

    loaded = load(str(path), env={"DB_FOR_TEST": "sqlite:///x.db", "REDIS_URL_FOR_TEST": "redis://cache:6379/1"})
    assert loaded.config.redis_url == "redis://cache:6379/1"


def test_a_variable_without_a_default_is_still_reported_unset(tmp_path: Path) -> None:
    path = tmp_path / "teammates.yml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError, match=r"database_url: \$\{DB_FOR_TEST\} is not set"):
        load(str(path), env={})
