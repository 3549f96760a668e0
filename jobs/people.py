"""Who is who: people from the config's `people:` across platforms, and who is an admin.

A rule about who may do something names people the way the config and workflow files do:
a person id (`ana`), a platform user id (`U0ANA0001`) or a user group (`S0FINANCE`). Platform
payloads only ever carry a platform user id; this module is where the two meet, so the
rules in the core compare like with like. Groups are resolved through the channel port when
the question is asked (membership changes), never cached here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agents.channels import Channel, ChannelError
from teammates.config import Config


@dataclass(frozen=True)
class People:
    admins: tuple[str, ...] = ()
    # person id -> {platform: user id}
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    workspace_admins: bool = False  # `slack.admins_from_workspace`: Slack's admins and owners are admins too

    @classmethod
    def from_config(cls, config: Config) -> People:
        accounts = {p.id: {k: v for k, v in (("slack", p.slack), ("teams", p.teams)) if v} for p in config.people}
        return cls(admins=tuple(config.admins), accounts=accounts, workspace_admins=config.slack.admins_from_workspace)

    def user_id(self, who: str, platform: str = "slack") -> str:
        """The platform user id of a person id; anything else is taken to be one already."""
        account = self.accounts.get(who)
        return account.get(platform, who) if account is not None else who

    def person_of(self, user_id: str, platform: str = "slack") -> str | None:
        for person, account in self.accounts.items():
            if account.get(platform) == user_id:
                return person
        return None

    def same(self, who: str, user_id: str, platform: str = "slack") -> bool:
        """Does `who` (a person id or platform user id) name the user `user_id`?"""
        return who == user_id or self.user_id(who, platform) == user_id or who == self.person_of(user_id, platform)

    def is_admin(self, user_id: str, platform: str = "slack") -> bool:
        """An admin by the config's `admins:` (what every rule without a channel at hand uses)."""
        return any(self.same(admin, user_id, platform) for admin in self.admins)

    async def may_administer(self, user_id: str, platform: str, channel: Channel | None) -> bool:
        """An admin by `admins:`, or — with `slack.admins_from_workspace` on — a Slack workspace
        admin or owner, asked of Slack now (users.info: a demoted admin loses it at once)."""
        if self.is_admin(user_id, platform):
            return True
        if not self.workspace_admins or platform != "slack" or channel is None:
            return False
        try:
            info = await channel.lookup_user(user_id)
        except ChannelError:
            return False  # Slack cannot say: not an admin (never the other way round)
        return info is not None and info.is_admin

    async def any_is(self, specs: Iterable[str], user_id: str, channel: Channel | None, platform: str = "slack") -> bool:
        """Is `user_id` one of `specs` (people, platform users, or members of a user group)?"""
        groups: list[str] = []
        for spec in specs:
            if self.same(spec, user_id, platform):
                return True
            if spec not in self.accounts and spec.startswith("S"):
                groups.append(spec)
        for group in groups:
            if channel is None:
                continue
            members = await channel.group_members(group)
            if members and user_id in members:
                return True
        return False

    async def user_ids(self, specs: Iterable[str], channel: Channel | None, platform: str = "slack") -> list[str]:
        """Every platform user `specs` names, groups expanded, in order, each once."""
        found: list[str] = []
        for spec in specs:
            members = None
            if spec not in self.accounts and spec.startswith("S") and channel is not None:
                members = await channel.group_members(spec)
            for user in members if members is not None else [self.user_id(spec, platform)]:
                if user not in found:
                    found.append(user)
        return found
