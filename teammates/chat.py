"""`teammates chat MEMBER`: talk to a member in the terminal, through the same core.

Messages are recorded and answered by the very turn the RQ job runs (`jobs.turns.answer`),
with a terminal channel instead of Slack, so a newcomer can meet a member before creating
any Slack app, and the conversation is remembered like any other."""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
import uuid
from collections.abc import Sequence
from typing import TextIO

from agents.channels import Channel, ChannelError
from agents.messages import (
    Button,
    Card,
    Form,
    InboundMessage,
    MessageRef,
    Page,
    UserInfo,
    task_lines,
)
from jobs.runtime import Runtime, llm_client
from jobs.turns import answer
from storage.db import Database
from storage.recorder import recorder_for
from teammates.config import LoadedConfig
from teammates.runtime import prepare_database


def card_text(card: Card) -> str:
    """A card as terminal lines: title, tasks as a numbered list with status marks, fields,
    body, status."""
    lines = [card.title or card.text, *task_lines(card.tasks), *(f"{f.label}: {f.value}" for f in card.fields), card.body,
             card.status]
    return "\n".join(line for line in lines if line)


class TerminalChannel:
    platform = "terminal"

    def __init__(self, name: str, out: TextIO) -> None:
        self.name = name
        self.out = out

    async def post(self, to: MessageRef, text: str, *, effect_id: str | None = None, buttons: Sequence[Button] = ()) -> MessageRef:
        self.out.write(f"\n{self.name}: {text}\n")
        if buttons:
            self.out.write("(" + " / ".join(b.label for b in buttons) + ": just write again)\n")
        self.out.flush()
        return MessageRef(to.conversation, f"{time.time():.6f}", to.thread)

    async def find_effect(self, where: MessageRef, effect_id: str) -> MessageRef | None:
        return None

    async def notify(self, user_id: str, text: str, *, effect_id: str | None = None) -> MessageRef:
        return await self.post(MessageRef(""), text)

    async def set_working(self, message: MessageRef) -> None:
        self.out.write(f"{self.name} is thinking…\n")
        self.out.flush()

    async def clear_working(self, message: MessageRef) -> None:
        return None

    async def lookup_user(self, user_id: str) -> UserInfo | None:
        return UserInfo(id=user_id, name=user_id)

    async def send_card(self, to: MessageRef, card: Card, *, effect_id: str | None = None) -> MessageRef:
        return await self.post(to, card_text(card), buttons=card.buttons if card.tasks else ())

    async def send_card_to_person(self, user_id: str, card: Card, *, effect_id: str | None = None) -> MessageRef:
        return await self.send_card(MessageRef(""), card)

    async def update(self, ref: MessageRef, card: Card) -> None:
        """A terminal cannot change what it printed: a card with tasks (a plan, a run's
        progress) is printed again as it now stands; any other card shows its new status."""
        if card.tasks:
            await self.post(ref, card_text(card), buttons=card.buttons)
        elif card.status:
            await self.post(ref, card.status)

    async def notice(self, where: MessageRef | None, user_id: str, text: str) -> None:
        await self.post(where or MessageRef(""), text)

    async def open_form(self, trigger: str, form: Form, where: MessageRef | None = None) -> None:
        raise ChannelError("not_supported", "forms need Slack or Teams")

    async def show(self, where: MessageRef | None, user_id: str, page: Page) -> None:
        await self.post(where or MessageRef(""), "\n\n".join([page.text, *(card_text(c) for c in page.cards), page.note]).strip())

    async def publish_home(self, user_id: str, page: Page) -> None:
        raise ChannelError("not_supported", "a home tab needs Slack")

    async def group_members(self, group_id: str) -> list[str] | None:
        return None

    def mention(self, user_id: str) -> str:
        return f"@{user_id}"

    def mention_conversation(self, conversation: str) -> str:
        return f"#{conversation}"


async def chat(loaded: LoadedConfig, member_id: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    member = loaded.config.member(member_id)
    db = Database(loaded.config.database_url)
    await prepare_database(loaded, db)
    terminal = TerminalChannel(member.name, stdout)

    def channels(platform: str, _member: str) -> Channel:
        return terminal

    rt = Runtime(loaded=loaded, db=db, channels=channels, redis=None, llm_factory=lambda: llm_client(loaded))
    recorder = recorder_for(db)
    user = getpass.getuser()
    stdout.write(f"You are talking with {member.name} ({member.role}). Ctrl-D to leave.\n")
    try:
        while True:
            stdout.write("\nyou> ")
            stdout.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            msg = InboundMessage(
                member_id=member_id,
                platform="terminal",
                event_id=uuid.uuid4().hex,
                kind="terminal",
                where=MessageRef(f"terminal-{user}", f"{time.time():.6f}"),
                user_id=user,
                text=text,
            )
            inbound_id = await recorder.record(msg)
            if inbound_id is not None:
                await answer(rt, inbound_id)
    finally:
        stdout.write("\n")
        await db.close()
