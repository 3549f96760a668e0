"""Plain message types shared by every channel: no Slack or Teams shapes beyond this line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MessageKind = Literal["dm", "mention", "thread", "terminal"]


@dataclass(frozen=True)
class InboundMessage:
    """A message a person sent that may be addressed to a member.

    `kind` says why it reached the member: a direct message, an @mention, or a reply in a
    thread (which the member answers only if it is already part of that thread). `where` is
    the message itself: its conversation, its own id, and its thread if it is a reply."""

    member_id: str
    platform: str
    event_id: str
    kind: MessageKind
    where: MessageRef
    user_id: str
    text: str

    @property
    def reply_to(self) -> MessageRef:
        """Where the answer goes: DMs answer in place, channel messages in their thread."""
        if self.kind in ("dm", "terminal"):
            return MessageRef(self.where.conversation, None, self.where.thread)
        return self.where.reply_in_thread()

    @property
    def thread_key(self) -> str:
        """Identifies the conversation: one per person for a DM's main line, one per thread."""
        if self.kind in ("dm", "terminal") and self.where.thread is None:
            return ""
        return self.where.thread or self.where.message or ""


@dataclass(frozen=True)
class UserInfo:
    """What a member may know about a colleague."""

    id: str
    name: str
    real_name: str | None = None
    email: str | None = None
    timezone: str | None = None
    is_bot: bool = False
    is_admin: bool = False  # an admin or owner of the platform's workspace (not the config's `admins:`)


@dataclass(frozen=True)
class Button:
    """An action offered under a message (rendered as Block Kit or Adaptive Card buttons)."""

    action_id: str
    label: str
    value: str
    style: Literal["primary", "danger"] | None = None


RETRY_TURN_ACTION = "retry_turn"
"""Button under an apology: answer the failed message again."""


@dataclass(frozen=True)
class MessageRef:
    """Where a message is, in any platform's terms: its conversation (a channel or DM id), its
    own id (Slack's `ts`, a Teams activity id) and the thread it belongs to, if any. The core
    passes these around and never looks inside the ids."""

    conversation: str
    message: str | None = None
    thread: str | None = None

    def reply_in_thread(self) -> MessageRef:
        """Where a reply to this message goes: its thread, or a new thread under it."""
        return MessageRef(self.conversation, None, self.thread or self.message)


@dataclass(frozen=True)
class Field:
    """A label and a value shown beside a message's body (`Workflow: payment-reminders`)."""

    label: str
    value: str


TaskStatus = Literal["pending", "in_progress", "complete", "error"]


@dataclass(frozen=True)
class Task:
    """One numbered line of a plan, or one step of a run's live progress (Slack renders a
    `task_card` inside a `plan` block; other surfaces a numbered list)."""

    id: str
    title: str
    status: TaskStatus = "pending"
    details: str = ""
    output: str = ""


TASK_MARKS: dict[str, str] = {"pending": "○", "in_progress": "◐", "complete": "✓", "error": "✗"}
"""How a task's status shows where there is no native plan (a terminal, a fallback section)."""


def task_lines(tasks: tuple[Task, ...] | list[Task]) -> list[str]:
    """The tasks as a numbered list with status marks, one line each (`2. ◐ Send reminders:
    3/5 done`): what every surface without native task cards shows."""
    lines = []
    for number, task in enumerate(tasks, 1):
        extra = " — ".join(part for part in (task.details, task.output) if part)
        lines.append(f"{number}. {TASK_MARKS.get(task.status, '○')} {task.title}" + (f": {extra}" if extra else ""))
    return lines


@dataclass(frozen=True)
class Card:
    """A message with structure: a title, context fields, a body (collapsed by the adapter
    when long, with `more` as the button that shows the whole of it), a status line and
    buttons. `text` is the plain fallback that notifications and screen readers use."""

    text: str
    title: str = ""
    fields: tuple[Field, ...] = ()
    body: str = ""
    status: str = ""
    buttons: tuple[Button, ...] = ()
    more: Button | None = None
    tasks: tuple[Task, ...] = ()  # a plan or a run's steps, shown under the title in order


@dataclass(frozen=True)
class FormInput:
    id: str
    label: str
    initial: str = ""
    multiline: bool = True
    optional: bool = False
    max_length: int = 3000


@dataclass(frozen=True)
class Form:
    """A form (a Slack modal, a Teams task module). Its submission comes back as an
    `InboundAction` with `action` = `submit_action`, `object_id` = `object_id` and the inputs
    in `values`. A form without inputs only shows `text` (a read-only view)."""

    title: str
    object_id: str
    submit_action: str = ""
    submit_label: str = "Submit"
    text: str = ""
    inputs: tuple[FormInput, ...] = ()


@dataclass(frozen=True)
class InboundAction:
    """What a person did on an interactive surface, in plain terms: a click or a form
    submission. `key` identifies the delivery (a replay carries the same key and is done
    once); `where` is the message the button was on (None for a form); `trigger` is the
    platform's short-lived handle for opening a form in answer (never stored)."""

    member_id: str
    platform: str
    key: str
    action: str
    object_id: str
    user_id: str
    where: MessageRef | None = None
    values: dict[str, str] | None = None
    trigger: str | None = None


# The actions the core answers; the adapters map their payloads onto these names.
APPROVE_ACTION = "approval.approve"
REJECT_ACTION = "approval.reject"  # opens the reason form
EDIT_ACTION = "approval.edit"  # opens the edit form
VIEW_ACTION = "approval.view"  # opens the whole draft, read-only
APPROVE_ALL_ACTION = "approval.approve_all"
REJECTED_FORM = "approval.rejected"  # the reason form's submission
EDITED_FORM = "approval.edited"  # the edit form's submission
PLAN_START_ACTION = "plan.start"  # a plan's Start: the workflow is created and scheduled
PLAN_CHANGE_ACTION = "plan.change"  # back to the conversation with the draft
PLAN_CANCEL_ACTION = "plan.cancel"  # the draft is discarded
EFFECT_CONFIRM_ACTION = "effect.confirm"  # "Post it" on a member's ask-first card (jobs/confirm.py)
EFFECT_DECLINE_ACTION = "effect.decline"  # "Don't" on that card
COMMAND_ACTION = "console.command"  # the member's slash command (`/nova status`): its text is the object
HOME_ACTION = "console.home"  # a person opened the member's home tab: publish it for them
WORKFLOW_PAUSE_ACTION = "workflow.pause"  # a workflow's Pause / Resume / Run now buttons (value: its name)
WORKFLOW_RESUME_ACTION = "workflow.resume"
WORKFLOW_RUN_ACTION = "workflow.run"


@dataclass(frozen=True)
class Page:
    """Several cards shown as one: a private answer to a command, or a member's home tab.
    `text` is the fallback for notifications and screen readers; `note` a last line under the
    cards (what was left out, where to see more)."""

    text: str
    cards: tuple[Card, ...] = ()
    note: str = ""


HOME_TAB = MessageRef("app_home")
"""Where a click on a member's home tab was: no conversation (platform ids are never this).
A notice meant for it goes to the person privately; a job that handled such a click publishes
the tab again, so what changed shows where the person is looking."""
