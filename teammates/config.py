"""Load and validate `teammates.yml`.

The file is YAML with `${VAR}` placeholders read from the environment (`${VAR:-default}`
uses `default` when VAR is unset or empty, as a shell does). A placeholder whose
variable is unset and has no default becomes `None` and is remembered in `Config.unset`: it is an error only
where the value is needed (a member without Slack credentials is simply not served on Slack).
Every problem is raised as one `ConfigError` naming the file, the key and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MODEL = "claude-sonnet-4-5"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MEMBER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# Slack's rules for a slash command: a leading "/", lowercase, no spaces, at most 32 characters.
SLASH_COMMAND = re.compile(r"^/[a-z0-9][a-z0-9_-]{0,30}$")


class ConfigError(Exception):
    """A user error in the configuration; its message is one line a person can act on."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackCredentials(_Strict):
    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("xoxb-"):
            raise ValueError("a bot token starting with 'xoxb-'")
        return value

    @field_validator("app_token")
    @classmethod
    def _app_token_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("xapp-"):
            raise ValueError("an app-level token starting with 'xapp-'")
        return value


class TeamsCredentials(_Strict):
    app_id: str | None = None
    app_password: str | None = None
    tenant_id: str | None = None


class MemberChannels(_Strict):
    approvals: str | None = None
    activity: str | None = None


class MemberLimits(_Strict):
    effects_per_day: int | None = Field(default=None, ge=0, description="external effects per member and day (None: no cap)")


class MemberConfig(_Strict):
    id: str
    name: str
    role: str
    description: str = ""
    persona: str = ""
    tools: list[str] = Field(default_factory=list)
    autonomy: Literal["notify", "approve", "auto"] = "approve"
    timezone: str | None = None  # for schedules built from chat when the person's is unknown
    channels: MemberChannels = Field(default_factory=MemberChannels)
    limits: MemberLimits = Field(default_factory=MemberLimits)
    slack: SlackCredentials | None = None
    teams: TeamsCredentials | None = None
    slash_command: str | None = None  # default: "/<id>" (`command`)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return _zone(value)

    @field_validator("slash_command")
    @classmethod
    def _slash_command_shape(cls, value: str | None) -> str | None:
        if value is not None and not SLASH_COMMAND.match(value):
            raise ValueError("a slash command like /nova: a leading '/', then lowercase letters, digits, '-' or '_', "
                             "at most 32 characters in all")
        return value

    @property
    def command(self) -> str:
        """The member's slash command: `slash_command`, else "/<id>" (which may be too long
        for Slack when the id is: the manifest says so)."""
        return self.slash_command or f"/{self.id}"

    @field_validator("id")
    @classmethod
    def _url_safe(cls, value: str) -> str:
        if not _MEMBER_ID.match(value):
            raise ValueError("a url-safe id: lowercase letters, digits, '-' or '_'")
        return value


def _zone(value: str | None) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"an IANA time zone name such as Europe/Amsterdam, not {value!r}") from exc
    return value


class WorkspaceChannels(_Strict):
    activity: str | None = None  # the activity feed of every member without one of its own


class WorkspaceConfig(_Strict):
    name: str = "My team"
    locale: str = "en-GB"
    timezone: str = "UTC"
    currency: str = "EUR"
    channels: WorkspaceChannels = Field(default_factory=WorkspaceChannels)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value) or value


class PersonConfig(_Strict):
    id: str
    name: str
    slack: str | None = None
    teams: str | None = None
    email: str | None = None
    timezone: str | None = None  # IANA; wins over the Slack profile's for schedules built from chat

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return _zone(value)


class Price(_Strict):
    """Per million tokens, in the workspace currency."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)  # default: a tenth of input (Anthropic's rate)
    cache_write: float | None = Field(default=None, ge=0)  # default: 1.25 x input (5-minute cache writes)


# List prices per million tokens (USD) of current Claude models; `llm.prices` overrides or adds.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(input=5.0, output=25.0),
    "claude-opus-4-1": Price(input=15.0, output=75.0),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0),
    "claude-sonnet-4": Price(input=3.0, output=15.0),
    "claude-haiku-4-5": Price(input=1.0, output=5.0),
}


class LlmConfig(_Strict):
    model: str = DEFAULT_MODEL
    max_tokens: int = Field(default=2048, ge=1)
    timeout: float = Field(default=60.0, gt=0, description="seconds per LLM call")
    max_retries: int = Field(default=2, ge=0)
    max_iterations: int = Field(default=8, ge=1, description="tool-use rounds per turn")
    prices: dict[str, Price] = Field(default_factory=dict, description="per million tokens, per model id")

    def price(self, model: str) -> Price | None:
        """The configured price of `model`, else the list price of its family (a dated id such as
        claude-sonnet-4-5-20250929 is priced as claude-sonnet-4-5); None when unknown."""
        if model in self.prices:
            return self.prices[model]
        for table in (self.prices, DEFAULT_PRICES):
            for name in sorted(table, key=len, reverse=True):
                if model.startswith(name):
                    return table[name]
        return None


class SlackConfig(_Strict):
    api_url: str = "https://slack.com/api/"
    config_token: str | None = None  # an app configuration token, only for `slack create-app`
    admins_from_workspace: bool = Field(default=False, description="Slack workspace admins and owners count as admins")

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class WorkersConfig(_Strict):
    turn_timeout: int = Field(default=120, ge=10, description="RQ job timeout for a turn, s")
    step_lease: float = Field(default=30, gt=0, description="s a worker holds a workflow step between heartbeats")
    reconcile_every: float = Field(default=15, gt=0, description="s between passes of the schedule/step reconciler")
    channel_post_interval: float = Field(default=1.0, ge=0, description="s between workflow posts to one channel")
    sweep_every: float = Field(default=60, gt=0, description="s between passes of the sweeper that re-enqueues lost turns")
    sweep_after: float = Field(default=180, ge=0, description="s a message waits unanswered before the sweeper re-enqueues it")


class WorkflowsConfig(_Strict):
    max_handoff_depth: int = Field(default=5, ge=1, description="a chain of handoffs/events deeper than this fails the step")
    max_foreach_items: int = Field(default=1000, ge=1, description="a foreach over more items fails")


class MetricsConfig(_Strict):
    """Where `/metrics` is served. It tells queue depths, member names and traffic, so it is
    never open on the public port: it has its own listener on `bind`:`port` (loopback by
    default; `bind: null` turns it off), and the main port answers it only with
    `Authorization: Bearer <token>` (404 when no token is set)."""

    bind: str | None = "127.0.0.1"
    port: int = Field(default=9464, ge=1, le=65535)
    token: str | None = None


class ServerConfig(_Strict):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class HttpToolConfig(_Strict):
    """An HTTP call; `url`, `headers` and `body` are Jinja templates over the tool's input
    (`secrets.NAME` only in `url` and `headers`). The URL's scheme and host are fixed text:
    the model's input never chooses where a request goes."""

    method: str = "GET"
    url: str | None  # None: a `${VAR}` in it is unset (an error only when the tool is called)
    headers: dict[str, str | None] = Field(default_factory=dict)
    body: str | None = None
    timeout: float = Field(default=20.0, gt=0, le=300, description="seconds for the whole request")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value.upper() not in _HTTP_METHODS:
            raise ValueError(f"one of {', '.join(_HTTP_METHODS)}")
        return value.upper()

    @field_validator("url")
    @classmethod
    def _fixed_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        origin = rest.split("/", 1)[0].split("?", 1)[0]
        if not sep or scheme.lower() not in ("http", "https") or not origin or any(m in origin for m in ("{{", "{%")):
            raise ValueError("a URL template starting with http:// or https:// and a fixed host (templates only after it)")
        _check_template(value, secrets=True)
        return value

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for text in value.values():
            if text is not None:
                _check_template(text, secrets=True)
        return value

    @field_validator("body")
    @classmethod
    def _body_template(cls, value: str | None) -> str | None:
        if value is not None:
            _check_template(value, secrets=False)
        return value


class ToolConfig(_Strict):
    """A business tool: exactly one of `http` or `python`."""

    name: str
    description: str
    http: HttpToolConfig | None = None
    python: str | None = None  # "module:function", or an entry point name in group `teammates.tools`
    input: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    returns: str | None = None  # JMESPath: what of the answer reaches the model
    effect: bool = False

    @field_validator("name")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("a tool name of letters, digits, '_' or '-' (at most 64)")
        return value

    @field_validator("input")
    @classmethod
    def _json_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        if value.get("type") != "object":
            raise ValueError("a JSON Schema with type: object")
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise ValueError(f"a valid JSON Schema ({where + ': ' if where else ''}{exc.message})") from None
        return value

    @field_validator("returns")
    @classmethod
    def _jmespath(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            jmespath.compile(value)
        except JMESPathError as exc:
            raise ValueError(f"a JMESPath expression ({str(exc).splitlines()[0]})") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ToolConfig:
        if (self.http is None) == (self.python is None):
            raise ValueError("exactly one of http: or python:")
        return self


class SmtpConfig(_Strict):
    host: str | None
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True  # port 465 means TLS from the start instead
    username: str | None = None
    password: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=300)


class EmailConfig(_Strict):
    """The built-in `send_email` effect tool, offered once this is configured."""

    smtp: SmtpConfig
    from_: str | None = Field(alias="from")


class Budget(_Strict):
    """A spending limit: `tokens` (input, output and cache tokens together) or `cost` (in
    `llm.prices` units), per `day` or `month` of the workspace's time zone."""

    tokens: int | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0)
    period: Literal["day", "month"] = "month"

    @model_validator(mode="after")
    def _one_measure(self) -> Budget:
        if (self.tokens is None) == (self.cost is None):
            raise ValueError("exactly one of tokens or cost")
        return self


class BudgetsConfig(_Strict):
    workspace: Budget | None = None
    members: dict[str, Budget] = Field(default_factory=dict)
    people: dict[str, Budget] = Field(default_factory=dict)  # person id (or Slack user id), or `default`
    warn_at: float = Field(default=0.9, gt=0, le=1, description="share of a budget used that warns once per period")


class Config(_Strict):
    database_url: str = "sqlite:///teammates.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    slack: SlackConfig = Field(default_factory=SlackConfig)
    secrets_key: str | None = None
    llm: LlmConfig = Field(default_factory=LlmConfig)
    workspace: WorkspaceConfig = Field(default_factory=WorkspaceConfig)
    people: list[PersonConfig] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    members: list[MemberConfig] = Field(default_factory=list)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    tools: list[ToolConfig] = Field(default_factory=list)
    email: EmailConfig | None = None
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)

    def member(self, member_id: str) -> MemberConfig:
        for member in self.members:
            if member.id == member_id:
                return member
        known = ", ".join(m.id for m in self.members) or "none configured"
        raise ConfigError(f"no member {member_id!r} in the config (members: {known})")


@dataclass(frozen=True)
class LoadedConfig:
    """The validated config plus where it came from and which `${VAR}`s were unset."""

    config: Config
    path: Path | None
    unset: Mapping[str, str] = field(default_factory=dict)  # dotted key -> variable name
    variables: Mapping[str, str] = field(default_factory=dict)  # dotted key -> the ${VAR} it is read from, set or not

    def variable(self, *keys: str | int) -> str | None:
        """The environment variable a setting is read from (`${VAR}` in the file), if any."""
        return self.variables.get(".".join(str(k) for k in keys))

    def slack_gaps(self, member: MemberConfig) -> list[str]:
        """Variables that keep `member` off Slack (empty when it can be served)."""
        gaps = []
        for key in ("bot_token", "signing_secret"):
            dotted = f"members.{self.config.members.index(member)}.slack.{key}"
            if dotted in self.unset:
                gaps.append(self.unset[dotted])
            elif member.slack is None or getattr(member.slack, key) is None:
                gaps.append(f"slack.{key}")
        return gaps


_ENV_OVERRIDES = {
    "DATABASE_URL": ("database_url",),
    "REDIS_URL": ("redis_url",),
    "SLACK_API_URL": ("slack", "api_url"),
    "TEAMMATES_MODEL": ("llm", "model"),
}


def config_path(explicit: str | None = None) -> Path | None:
    """The file to read: `--config`, else `TEAMMATES_CONFIG`, else ./teammates.yml if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get("TEAMMATES_CONFIG"):
        return Path(os.environ["TEAMMATES_CONFIG"])
    default = Path("teammates.yml")
    return default if default.exists() else None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, interpolate, override from the environment and validate the config."""
    env = os.environ if env is None else env
    path = config_path(explicit)
    raw: Any = {}
    where = str(path) if path else "(no config file)"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    unset: dict[str, str] = {}
    variables: dict[str, str] = {}
    data = _interpolate(raw, env, (), unset, variables)
    for var, keys in _ENV_OVERRIDES.items():
        if env.get(var):
            _set_in(data, keys, env[var])
            unset.pop(".".join(keys), None)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_name_members(_describe(exc, unset), data)}") from None
    ids = [m.id for m in config.members]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{where}: members: id {dupes[0]!r} is used twice; ids must be unique")
    names = [t.name for t in config.tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: tools: name {twice[0]!r} is used twice; names must be unique")
    unknown = sorted(set(config.budgets.members) - set(ids))
    if unknown:
        raise ConfigError(f"{where}: budgets.members: no member {unknown[0]!r} (members: {', '.join(ids) or 'none configured'})")
    budgets = config.budgets
    priced = [b for b in [budgets.workspace, *budgets.members.values(), *budgets.people.values()] if b is not None and b.cost is not None]
    if priced and config.llm.price(config.llm.model) is None:
        raise ConfigError(f"{where}: budgets: a cost budget needs the price of {config.llm.model!r}: add it to llm.prices "
                          "(input, output per million tokens), or give the budget in tokens")
    return LoadedConfig(config=config, path=path, unset=unset, variables=variables)


def _interpolate(value: Any, env: Mapping[str, str], keys: tuple[str, ...], unset: dict[str, str],
                 variables: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, (*keys, str(k)), unset, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, (*keys, str(i)), unset, variables) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        found = _VAR.findall(value)
        if found:
            variables[".".join(keys)] = found[0][0]
        missing = [name for name, default in _VAR.findall(value) if not env.get(name) and not default]
        if missing:
            unset[".".join(keys)] = missing[0]
            return None
        return _VAR.sub(lambda m: env.get(m.group(1)) or m.group(2), value)
    return value


def _set_in(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _describe(exc: ValidationError, unset: Mapping[str, str]) -> str:
    """One line for the first error: the dotted key, what was expected, and what was found."""
    err = exc.errors()[0]
    dotted = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{dotted}: unknown key (check the spelling against the documented settings)"
    if kind == "missing":
        return f"{dotted}: required but missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    if dotted in unset:
        return f"{dotted}: ${{{unset[dotted]}}} is not set in the environment"
    found = err.get("input")
    secret = any(word in dotted for word in ("token", "secret", "password", "key", "url", "headers"))
    shown = "" if secret or not isinstance(found, str | int | float | bool) else f" (found {found!r})"
    if kind.endswith("_type") or kind.startswith("literal"):
        return f"{dotted}: expected {message.lower()}{shown}"
    return f"{dotted}: expected {message}{shown}"


def _name_members(message: str, data: Mapping[str, Any]) -> str:
    """Say `members[nova]` (and `tools[get_invoice]`) rather than `members.0` so the reader
    finds the entry."""

    def name(match: re.Match[str]) -> str:
        section, index = match.group(1), int(match.group(2))
        entries = data.get(section)
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
            key = entries[index].get("id" if section == "members" else "name")
            if isinstance(key, str):
                return f"{section}[{key}]"
        return f"{section}[{index}]"

    return re.sub(r"\b(members|tools)\.(\d+)", name, message)


def _check_template(text: str, *, secrets: bool) -> None:
    """A tool's url/headers/body must be a valid template; `secrets` only where allowed."""
    from jobs.workflows import templates

    problem = templates.check_syntax(text)
    if problem is not None:
        raise ValueError(f"a valid template ({problem})")
    if not secrets and templates.reads_secrets(text):
        raise ValueError("a template without secrets ({{ secrets.NAME }} may only be used in an HTTP tool's url and headers)")
