"""The feed's wording: one activity row in, one line a person reads (or none) out. No I/O.

Worth a line: a run starting and ending, what left the team (a post step, an effect tool),
approvals asked and decided, failures and stops, budget events, handoffs, and whatever people
did through the product (plans started, workflows applied, paused, deleted, settings and
budgets changed). Not worth one: the steps in between (`step_done` of anything that is not an
effect), reminders, and `run.finished` (the run's end already has its line). An action this
module does not know gets a plain line from its description, so what other parts of the
product record appears without a change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from storage.feed import RunFacts
from storage.models import Activity

QUIET = frozenset({"approval_reminded", "run.finished"})

_PAST = {"send": "sent", "post": "posted", "create": "created", "update": "updated", "notify": "notified", "add": "added",
         "delete": "deleted", "remove": "removed", "cancel": "cancelled", "book": "booked", "charge": "charged",
         "email": "emailed", "schedule": "scheduled", "invite": "invited", "publish": "published", "refund": "refunded",
         "close": "closed", "open": "opened", "file": "filed", "submit": "submitted", "pay": "paid", "issue": "issued"}
_RECIPIENT_KEYS = ("client", "customer", "company", "recipient", "to", "contact", "name", "email")
_REFERENCE_KEYS = ("invoice", "invoice_number", "number", "order", "order_id", "lead", "lead_id", "ticket", "reference", "id")
_SYSTEM = {"cli": "Someone at the command line", "scheduler": "The scheduler", "budget": "The budget check"}
_VIA = {"schedule": "on its schedule", "webhook": "from a webhook", "chat": "from chat", "cli": "from the command line",
        "handoff": "on a handoff", "event": "on an event", "manual": "by hand"}


@dataclass(frozen=True)
class Words:
    """What the wording needs to know besides the row: names and the tool registry."""

    member_name: Callable[[str], str]  # member id -> "Nova"
    mention: Callable[[str], str]  # person id or platform user id -> "<@U0ANA0001>"
    is_effect: Callable[[str], bool]  # tool name -> changes the outside world?
    tool_schema: Callable[[str], Mapping[str, Any]]  # tool name -> its input JSON Schema ({} if unknown)
    conversation: Callable[[str], str]  # channel id -> "<#C0123>"


def line(row: Activity, words: Words, run: RunFacts | None = None) -> str | None:
    """The line for `row`, or None when it is not worth one."""
    action, details = row.action, row.details or {}
    if action in QUIET:
        return None
    name = words.member_name(row.member_id) if row.member_id else "The team"
    who = _actor(row, words)
    workflow = run.workflow if run is not None else (row.entity_id if row.entity_type == "workflow" else None)
    if action == "run_started":
        text = f"{name} started {workflow or row.entity_id}"
        if run is not None and run.person:
            text += f" for {words.mention(run.person)}"
        via = _VIA.get(run.via or run.trigger) if run is not None else None
        return f"{text} {via}" if via else text
    if action == "run_completed":
        return f"{name} finished {workflow}"
    if action == "run_failed":
        return f"{name}'s {workflow} failed: {_after(row.description, ' failed: ')}"
    if action == "run_cancelled":
        return f"{who} cancelled {workflow}" + (f" and {len(details['approvals'])} pending approval(s)" if details.get("approvals") else "")
    if action == "step_done":
        return _effect_line(name, details, words)
    if action == "step_failed":
        return f"{name}'s step {row.entity_id} failed: {_after(row.description, ' failed: ')}"
    if action == "approval_requested":
        approvers = [words.mention(str(a)) for a in details.get("approvers") or []]
        title = _after(row.description, ": asked for approval: ")
        return f"{name} asked {_together(approvers) or 'for approval'} to approve: {title}" if approvers else f"{name} asked for approval: {title}"
    if action == "approval_approved":
        return f"{who} approved{' with edits' if details.get('edited') else ''}: {_after(row.description, 'Approved: ')}"
    if action == "approval_rejected":
        return f"{who} rejected: {_after(row.description, 'Rejected: ')}"
    if action == "approval_counted":
        return f"{who} {_lower(row.description)}"
    if action == "approval_expired":
        return f"No one decided in time, so nothing was sent: {_after(row.description, 'Expired (not sent): ')}"
    if action == "approval_cancelled":
        return f"{who} cancelled the request: {_after(row.description, ': ')}"
    if action == "handoff":
        return f"{name} handed {workflow or 'work'} over to {words.member_name(str(row.entity_id))}"
    if action == "plan.started":
        return f"{who} started {row.entity_id} from {name}'s plan"
    if action in ("workflow_applied", "workflow_deleted"):
        return f"{who} {_lower(row.description)}" if row.actor_type == "person" else row.description
    if action in ("workflow_paused", "workflow_resumed"):
        if row.actor_type != "person":
            return row.description
        return f"{who} {'paused' if action == 'workflow_paused' else 'resumed'} {row.entity_id}"
    if action in ("member_paused", "member_resumed") and row.actor_type == "person":
        return f"{who} {'paused' if action == 'member_paused' else 'resumed'} {name}"
    if action == "message.failed":
        return f"{name} {_lower(row.description)}"
    if action.startswith("effect_") and row.actor_type == "person":  # a person's answer to a member's confirmation card
        return f"{who} {action.removeprefix('effect_')}: {_before(row.description, ': ')}"
    return _plain(row, who, name)


def _plain(row: Activity, who: str, name: str) -> str:
    """A line for an action this module has no words for: who, then what the row says."""
    if row.actor_type == "person":
        return f"{who}: {row.description}"
    if row.actor_type == "member":
        return f"{name}: {row.description}"
    return row.description


def _effect_line(name: str, details: Mapping[str, Any], words: Words) -> str | None:
    """A step that left the team: a post, or a call of an effect tool; None for any other step."""
    if details.get("kind") == "post":
        where = details.get("channel")
        return f"{name} posted a message in {words.conversation(str(where))}" if where else f"{name} posted a message"
    tool = details.get("tool")
    if details.get("kind") != "tool" or not isinstance(tool, str) or not words.is_effect(tool):
        return None
    about = details.get("about")
    return f"{name} {effect_phrase(tool, about if isinstance(about, dict) else {}, words.tool_schema(tool))}"


def effect_phrase(tool: str, about: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """`send_payment_reminder` with {client: Acme Corp, number: 2024-015} -> "sent a payment
    reminder to Acme Corp for invoice 2024-015" (the reference's noun from the tool's input
    schema: `number` described as "the invoice number")."""
    verb, _, thing = tool.partition("_")
    past = _PAST.get(verb)
    if past and thing:
        noun = thing.replace("_", " ")
        phrase = f"{past} {'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
    else:
        phrase = f"ran {tool}"
    recipient = next((str(about[k]) for k in _RECIPIENT_KEYS if _shown(about.get(k))), None)
    if recipient:
        phrase += f" to {recipient}"
    key = next((k for k in _REFERENCE_KEYS if _shown(about.get(k))), None)
    if key is not None:
        phrase += f" for {_reference_noun(key, schema)}{about[key]}"
    return phrase


def _reference_noun(key: str, schema: Mapping[str, Any]) -> str:
    """"invoice " for `invoice`, or for `number` described as "the invoice number"; "#" when
    nothing says what it numbers."""
    if key not in ("number", "id", "reference"):
        return key.removesuffix("_number").removesuffix("_id").replace("_", " ") + " "
    described = ((schema.get("properties") or {}).get(key) or {}).get("description") if isinstance(schema, Mapping) else None
    if isinstance(described, str):
        words = described.strip().lower().removeprefix("the ").split()
        if len(words) == 2 and words[1] in ("number", "id", "reference"):
            return words[0] + " "
    return "#"


def _shown(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip() != ""


def _actor(row: Activity, words: Words) -> str:
    if row.actor_type == "person":
        return words.mention(row.actor_id)
    if row.actor_type == "member":
        return words.member_name(row.actor_id)
    return _SYSTEM.get(row.actor_id, "The system")


def _together(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1] if names else ""


def _after(text: str, marker: str) -> str:
    return text.split(marker, 1)[1] if marker in text else text


def _before(text: str, marker: str) -> str:
    return text.rsplit(marker, 1)[0] if marker in text else text


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
