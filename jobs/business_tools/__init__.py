"""Business tools from configuration (`tools:`) and the built-in `send_email` (`email:`).

`install(loaded)` builds them from a loaded config and makes them the process's configured
tools in the registry (replacing any installed before), so turns, workflow steps and
`workflow apply` know them by name. Every process calls it right after loading the config
(`teammates.cli.main`); a bad entry is one `ConfigError` line naming the tool."""

from __future__ import annotations

import sys
from typing import Any

from agents.tools.configured import configured_tool
from agents.tools.registry import Tool, install_configured
from teammates.config import ConfigError, LoadedConfig

SEND_EMAIL = "send_email"  # built in, offered when `email:` is configured


def install(loaded: LoadedConfig) -> None:
    """Build and install the configured tools; raises `ConfigError` for a bad entry."""
    config = loaded.config
    where = str(loaded.path) if loaded.path else "(no config file)"
    if loaded.path is not None and any(t.python for t in config.tools):
        # `module:function` may name a module beside the config file (searched after all
        # installed packages, so it never shadows one).
        folder = str(loaded.path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)
    tools: list[Tool[Any]] = []
    for index, entry in enumerate(config.tools):
        at = f"{where}: tools[{entry.name}]"
        if entry.name == SEND_EMAIL:
            raise ConfigError(f"{at}.name: {SEND_EMAIL!r} is the name of a built-in tool (configure it with email:)")
        if entry.http is not None:
            from jobs.business_tools.http import HttpTool

            prefix = f"tools.{index}.http."
            unset = {key.removeprefix(prefix): var for key, var in loaded.unset.items() if key.startswith(prefix)}
            handler: Any = HttpTool(name=entry.name, spec=entry.http, input_schema=entry.input, returns=entry.returns,
                                    effect=entry.effect, unset=unset)
        else:
            from jobs.business_tools.python import NotFound, PythonTool, find

            assert entry.python is not None
            try:
                function = find(entry.python)
            except NotFound as exc:
                raise ConfigError(f"{at}.python: {exc}") from None
            handler = PythonTool(name=entry.name, function=function, returns=entry.returns, effect=entry.effect)
        tools.append(configured_tool(entry.name, entry.description, entry.input, entry.effect, handler))
    if config.email is not None:
        from jobs.business_tools.mail import send_email_tool

        unset = {key: var for key, var in loaded.unset.items() if key.startswith("email.")}
        tools.append(send_email_tool(config.email, unset))
    try:
        install_configured(tools)
    except ValueError as exc:
        raise ConfigError(f"{where}: tools: {exc}") from None
