"""`teammates manifest MEMBER`: the Slack app manifest for one member, from `manifest.yml`."""

from __future__ import annotations

from pathlib import Path

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from teammates.config import ConfigError, LoadedConfig

TEMPLATE = Path(__file__).resolve().parent.parent / "manifest.yml"


def render(loaded: LoadedConfig, member_id: str, url: str) -> str:
    member = loaded.config.member(member_id)
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"--url: expected the public base URL of `teammates serve`, like https://bots.example.com (got {url!r})")
    template_path = TEMPLATE
    if not template_path.exists():
        raise ConfigError(f"{template_path}: the manifest template is missing from this installation")
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    socket_mode = bool(member.slack and member.slack.app_token)
    text = env.from_string(template_path.read_text(encoding="utf-8")).render(
        member=member, url=url.rstrip("/"), socket_mode=socket_mode
    )
    yaml.safe_load(text)  # a template edit that breaks YAML fails here, not in Slack's UI
    return text
