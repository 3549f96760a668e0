"""Project messages and forms rendered as Slack Block Kit, built with `slack_sdk.models` so
every block is one Slack's own models accept (limits included) rather than hand-written JSON."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlanBlock,
    RichTextBlock,
    RichTextElementParts,
    RichTextSectionElement,
    SectionBlock,
    TaskCardBlock,
)
from slack_sdk.models.views import View

from agents.messages import Button, Card, Form, Page, Task, task_lines

SECTION_LIMIT = 3000  # characters of one section's text
COLLAPSED = 600  # a longer body is shown cut here, with its "more" button for the whole
FIELD_LIMIT = 2000  # characters of one field's text
VIEW_TEXT_LIMIT = 2900  # per section in a modal (a long draft spans several sections)
TITLE_LIMIT = 24  # a modal's title
ID_LIMIT = 255  # action_id, block_id, value, private_metadata (3000), callback_id
PLAN_TASKS = 50  # task cards in one plan block
PLAN_TITLE_LIMIT = 150  # a plan's and a task card's plain-text title
TASK_TEXT_LIMIT = 1000  # a task card's details or output


def card_blocks(card: Card, *, native_tasks: bool = True) -> list[dict[str, Any]]:
    """The blocks of a card: title, tasks, fields, body (collapsed when long), status, buttons.

    A card with tasks shows them as Slack's agent-native `plan` block (titled with the card's
    title, in the title's place) of `task_card`s; with `native_tasks=False` — for surfaces and
    workspaces that lack those blocks — as the title and a numbered list in a plain section.
    Either way the card's `text` stays the notification's (and screen reader's) fallback."""
    blocks: list[Block] = []
    if card.tasks and native_tasks:
        blocks.append(plan_block(card.title or card.text, card.tasks))
    else:
        if card.title:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(f"*{card.title}*", SECTION_LIMIT))))
        if card.tasks:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut("\n".join(task_lines(card.tasks)), SECTION_LIMIT))))
    if card.fields:
        blocks.append(SectionBlock(fields=[MarkdownTextObject(text=_cut(f"*{f.label}*\n{f.value}", FIELD_LIMIT)) for f in card.fields[:10]]))
    buttons = list(card.buttons)
    if card.body:
        long = len(card.body) > COLLAPSED
        shown = card.body[:COLLAPSED].rstrip() + "…" if long else card.body
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_quote(shown))))
        if long and card.more is not None:
            buttons.append(card.more)
    if card.status:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cut(card.status, SECTION_LIMIT))]))
    if buttons:
        blocks.append(ActionsBlock(elements=[_button(b) for b in buttons[:25]]))
    if not blocks:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(card.text, SECTION_LIMIT))))
    return [block.to_dict() for block in blocks]


def plan_block(title: str, tasks: tuple[Task, ...]) -> PlanBlock:
    """A `plan` block: one `task_card` per task, in order (at most `PLAN_TASKS`; the rest are
    summed up in a last card). Task ids are made unique, as Slack requires within a plan."""
    shown = list(tasks[:PLAN_TASKS])
    if len(tasks) > PLAN_TASKS:
        rest = tasks[PLAN_TASKS - 1:]
        done = sum(t.status == "complete" for t in rest)
        shown[-1] = Task(id="more", title=f"{len(rest)} more steps", details=f"{done}/{len(rest)} done",
                         status="error" if any(t.status == "error" for t in rest) else
                         "complete" if done == len(rest) else "in_progress" if done or any(t.status == "in_progress" for t in rest)
                         else "pending")
    cards: list[TaskCardBlock] = []
    seen: set[str] = set()
    for number, task in enumerate(shown, 1):
        task_id = _cut(task.id or str(number), 64)
        if task_id in seen:
            task_id = f"{number}-{task_id}"[:64]
        seen.add(task_id)
        cards.append(TaskCardBlock(task_id=task_id, title=_cut(task.title or task.id, PLAN_TITLE_LIMIT), status=task.status,
                                   details=_rich(task.details), output=_rich(task.output)))
    return PlanBlock(title=_cut(title or "Plan", PLAN_TITLE_LIMIT), tasks=cards)


def buttons_blocks(text: str, buttons: list[Button]) -> list[dict[str, Any]]:
    return [
        SectionBlock(text=MarkdownTextObject(text=_cut(text, SECTION_LIMIT))).to_dict(),
        ActionsBlock(elements=[_button(b) for b in buttons]).to_dict(),
    ]


def form_view(form: Form, metadata: str | None = None) -> dict[str, Any]:
    """A modal: read-only text in sections, then one input per form input. Its
    `private_metadata` carries `metadata` (default: the object id), its `callback_id` the
    submit action."""
    blocks: list[Block] = []
    text = form.text
    while text and len(blocks) < 40:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text[:VIEW_TEXT_LIMIT])))
        text = text[VIEW_TEXT_LIMIT:]
    for item in form.inputs:
        element = PlainTextInputElement(action_id=item.id, multiline=item.multiline, max_length=item.max_length,
                                        initial_value=item.initial[: item.max_length] or None)
        blocks.append(InputBlock(block_id=item.id, label=item.label, element=element, optional=item.optional))
    view = View(
        type="modal",
        callback_id=form.submit_action or "view_only",
        private_metadata=metadata if metadata is not None else form.object_id,
        title=_cut(form.title, TITLE_LIMIT),
        close="Close" if not form.inputs else "Cancel",
        submit=form.submit_label if form.inputs else None,
        blocks=blocks or [SectionBlock(text=" ")],
    )
    return view.to_dict()


MESSAGE_BLOCKS = 50  # Slack's most blocks in one message
HOME_BLOCKS = 100  # ... and in one home tab


def page_blocks(page: Page, limit: int = MESSAGE_BLOCKS) -> list[dict[str, Any]]:
    """The cards of a page one after another, a divider between them, then its note. Cards
    that would pass Slack's `limit` of blocks are left out and counted in the last line."""
    blocks: list[dict[str, Any]] = []
    if page.text:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(page.text, SECTION_LIMIT))).to_dict())
    shown = 0
    for card in page.cards:
        more = ([DividerBlock().to_dict()] if blocks else []) + card_blocks(card, native_tasks=False)
        if len(blocks) + len(more) > limit - 2:  # room for the last line
            break
        blocks += more
        shown += 1
    note = page.note
    if shown < len(page.cards):
        note = f"{len(page.cards) - shown} more not shown. " + note
    if note:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cut(note.strip(), SECTION_LIMIT))]).to_dict())
    return blocks or [SectionBlock(text=MarkdownTextObject(text=" ")).to_dict()]


def home_view(page: Page) -> dict[str, Any]:
    """A member's home tab (`views.publish`)."""
    return View(type="home", blocks=page_blocks(page, HOME_BLOCKS)).to_dict()


def _button(b: Button) -> ButtonElement:
    return ButtonElement(text=b.label, action_id=b.action_id, value=b.value[:2000], style=b.style)


def _rich(text: str) -> RichTextBlock | None:
    """A task card's details or output: one rich-text section of plain text (None when empty)."""
    if not text:
        return None
    return RichTextBlock(elements=[RichTextSectionElement(elements=[RichTextElementParts.Text(text=_cut(text, TASK_TEXT_LIMIT))])])


def _quote(text: str) -> str:
    return _cut("\n".join("> " + line for line in text.splitlines()) or ">", SECTION_LIMIT)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
