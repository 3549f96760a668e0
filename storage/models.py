"""The data model: every fact the product keeps lives in these tables.

Nothing important lives only in memory or in Redis: a process may die at any moment, and the
rows here are what the next one resumes from. Times are stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A moment in UTC, aware on the way in and on the way out, on every database.

    SQLite has no time zone type: SQLAlchemy stores the wall time and reads it back naive, so
    comparing a loaded value with `utcnow()` raised TypeError (on SQLite only). Values are
    converted to UTC before they are bound and tagged UTC when they are read; a naive value
    handed in is taken to be UTC already."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else aware

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Workspace(Base):
    """The organisation the members work for: the business context of every prompt."""

    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(35))
    timezone: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Person(Base):
    """A human colleague, one identity across Slack, Teams and email."""

    __tablename__ = "people"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    slack_user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    teams_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    email: Mapped[str | None] = mapped_column(String(320))


class Member(Base):
    """A virtual team member. `file_values` remembers what the config file last said, so a
    setting changed from chat wins until the file's own value changes."""

    __tablename__ = "members"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    persona: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[Any]] = mapped_column(default=list)
    autonomy: Mapped[str] = mapped_column(String(16), default="approve")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused
    slack_user_id: Mapped[str | None] = mapped_column(String(32))
    channels: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)  # {approvals, activity}
    timezone: Mapped[str | None] = mapped_column(String(64))
    paused_by: Mapped[str | None] = mapped_column(String(64))
    paused_at: Mapped[datetime | None] = mapped_column()
    file_values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conversation(Base):
    """One line of talk a member keeps: a DM with one person, or one thread in a channel."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("member_id", "platform", "channel", "thread_key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    thread_key: Mapped[str] = mapped_column(String(64), default="")  # "" for a DM's main line
    user_id: Mapped[str | None] = mapped_column(String(64))  # the person, for DMs
    # The turn answering this conversation now, until its lease runs out: one at a time.
    turn_holder: Mapped[str | None] = mapped_column(String(64))
    turn_lease_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    """Every message a member saw or sent; prompts are built from here, never from Slack."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_id_id", "conversation_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    author_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    platform_ts: Mapped[str | None] = mapped_column(String(32))
    inbound_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_events.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessedEvent(Base):
    """Platform event ids already accepted: a redelivery of one of these is acked and dropped."""

    __tablename__ = "processed_events"
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundEvent(Base):
    """A message addressed to a member, recorded before the ack and answered by a job.

    Unique on the message itself (channel + ts): Slack sends an @mention twice with different
    event ids, and a retry of either must not produce a second answer."""

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("member_id", "platform", "channel", "ts"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # dm | mention | thread | terminal
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="received", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column()  # a worker is on it until then
    error: Mapped[str | None] = mapped_column(Text)
    reply_ts: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()


class LlmUsage(Base):
    """Token usage of one LLM call, per member, person and conversation, or per member, workflow
    and run for a workflow's agent step (for quotas, costs)."""

    __tablename__ = "llm_usage"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    run_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    workflow: Mapped[str | None] = mapped_column(String(100), index=True)  # an agent step's workflow; run_id is its run
    cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # at the price when it was made
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Effect(Base):
    """An outbound side effect, written `started` before it happens and `done` after, so a
    retry knows whether to skip, reconcile or act."""

    __tablename__ = "effects"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="started")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Workflow(Base):
    """A workflow a member owns; its steps live in immutable versions."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused | completed
    active_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Where a workflow built from chat was built ({platform, conversation, thread, person}):
    # its scheduled and webhook runs report there. None for workflows applied from files.
    home: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class WorkflowVersion(Base):
    """One immutable definition of a workflow; a run stays pinned to the version it began on."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkflowRun(Base):
    """One execution of a workflow version. Unique on (workflow, slot) so a schedule slot can
    never start twice, whatever Redis or two reconcilers do."""

    __tablename__ = "workflow_runs"
    __table_args__ = (UniqueConstraint("workflow_id", "slot"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24), default="running")
    trigger: Mapped[str] = mapped_column(String(16))
    slot: Mapped[int | None] = mapped_column(BigInteger)
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    # Handoffs and events between this run and the run a trigger started (that one is 0).
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the run came from (`jobs.runs.origin.Origin.to_json`: via, platform, conversation,
    # thread, person); NULL for runs from before it was kept.
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)  # every advance
    finished_at: Mapped[datetime | None] = mapped_column()


class StepRun(Base):
    """The record of one step of a run: a completed step is never done again."""

    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("run_id", "step_path"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    step_path: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column()  # a worker is on it until then
    wake_at: Mapped[datetime | None] = mapped_column()  # a wait, an approval's timeout
    input: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class Approval(Base):
    """A question to a person before something leaves the team; the first decision wins."""

    __tablename__ = "approvals"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"), index=True)
    step_path: Mapped[str | None] = mapped_column(String(300))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    approvers: Mapped[list[Any]] = mapped_column(default=list)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column()
    platform: Mapped[str | None] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    workflow: Mapped[str | None] = mapped_column(String(100), index=True)
    quorum: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Each person's click: [{by, decision, at, reason, content}], in order; a quorum counts them.
    decisions: Mapped[list[Any]] = mapped_column(default=list)
    # Every copy of the request that was posted: [{platform, conversation, message, thread}].
    messages: Mapped[list[Any]] = mapped_column(default=list)
    remind_at: Mapped[datetime | None] = mapped_column()
    reminded_at: Mapped[datetime | None] = mapped_column()
    # Bumped by every change of `decisions` or `approvers`: a guarded UPDATE on it makes two
    # concurrent clicks read-modify-write safely on every database.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class InboundAction(Base):
    """A click or form submission, recorded before the ack (Slack never delivers an
    interaction twice) and handled by a job. Unique on the delivery's key, so a replayed
    payload is done once."""

    __tablename__ = "inbound_actions"
    __table_args__ = (UniqueConstraint("member_id", "platform", "key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(40))
    platform: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(64))
    conversation: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(String(64))
    thread: Mapped[str | None] = mapped_column(String(64))
    values: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="received", index=True)  # received | done | failed
    outcome: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column()


class Activity(Base):
    """The activity feed: what every member did, beside what humans did."""

    __tablename__ = "activity"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str | None] = mapped_column(String(40), index=True)
    actor_type: Mapped[str] = mapped_column(String(16))  # member | person | system
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    entity_type: Mapped[str | None] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Secret(Base):
    """A named secret for workflows, encrypted with the configured `secrets_key`."""

    __tablename__ = "secrets"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """A webhook delivery id already turned into a run. The primary key makes one delivery
    start one run: the row is written in the transaction that creates the run, so a sender's
    retry (or a replay) finds it and gets the first run's id back."""

    __tablename__ = "webhook_deliveries"
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Plan(Base):
    """A workflow a member drafted in a conversation, waiting for the person to start it.

    proposed -> started | cancelled | expired | superseded (a newer plan for the same workflow
    in the same conversation) | changing (the person pressed Change; a new plan follows).
    Only a guarded UPDATE on `status = 'proposed'` (or 'changing') moves it on, so a double
    click or a click racing a typed "yes" starts it once."""

    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    workflow: Mapped[str] = mapped_column(String(100))
    definition: Mapped[dict[str, Any]] = mapped_column()
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set for a change to a stored workflow
    status: Mapped[str] = mapped_column(String(16), index=True)
    requester: Mapped[str] = mapped_column(String(64))  # the platform user who asked
    person: Mapped[str | None] = mapped_column(String(64))  # their person id, when `people:` knows them
    platform: Mapped[str] = mapped_column(String(16))
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    thread: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(String(64))  # the plan card
    conversation_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    notes: Mapped[list[Any]] = mapped_column(default=list)  # what the plan had to say (a time zone replaced)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column()


class Budget(Base):
    """A limit per scope: `workspace`, `member:ID`, `person:ID`, `person:default` (LLM tokens or
    cost per day or month), or `effects:ID` (a member's external effects per day).

    Seeded from the config file; `file_value` is what the file said when last seeded, so an
    admin's change (`set_by`) wins until the file's own value changes."""

    __tablename__ = "budgets"
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    metric: Mapped[str] = mapped_column(String(16))  # tokens | cost | effects
    amount: Mapped[float] = mapped_column(Float)
    period: Mapped[str] = mapped_column(String(8))  # day | month
    file_value: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    set_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BudgetUse(Base):
    """The ledger of one scope in one period (`2026-12-02`, `2026-12`): settled use, what calls in
    flight reserved, and whether its warning was given. Only single guarded UPDATEs change it,
    so concurrent processes can never together pass a limit."""

    __tablename__ = "budget_use"
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # effects (for `effects:ID`)
    warned: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class BudgetReservation(Base):
    """One LLM call in flight: what it reserved in which ledgers, until it settles. One whose
    process died is released when it expires."""

    __tablename__ = "budget_reservations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    claims: Mapped[list[Any]] = mapped_column()  # [[scope, period], ...]
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class EffectSlot(Base):
    """An external effect that took one of its member's daily slots (`effects_per_day`); keyed
    by the effect's id, so a retry of the same effect takes no second slot."""

    __tablename__ = "effect_slots"
    effect_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(40))
    day: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
