"""The triggers of a workflow (`schedule`, `manual`, `webhook`, `event`) and `Trigger`, their
union tagged by which one key a trigger has."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator

from jobs.workflows.definition.fields import Duration, EventName, MemberId, Strict
from jobs.workflows.durations import parse_duration


class ScheduleTrigger(Strict):
    """Start a run at every slot of a cron schedule, read in `timezone`."""

    kind: ClassVar[str] = "schedule"
    schedule: str = Field(description="cron with 5 fields: minute hour day month weekday")
    timezone: str | None = Field(
        default=None, description="IANA time zone; default: the workspace's (UTC unless configured)"
    )
    overlap: Literal["skip", "queue", "allow"] = Field(
        default="skip", description="when a slot falls due while the previous run is still going"
    )
    catch_up: Duration = Field(
        default="1h", description="a slot missed by less than this runs once; older ones are skipped"
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        fields = value.split()
        alias = len(fields) == 1 and value.strip().startswith("@")
        if not (len(fields) == 5 or alias) or not croniter.is_valid(value):
            raise ValueError("a cron expression with 5 fields (minute hour day month weekday), such as '0 9 * * MON-FRI'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError("an IANA time zone name such as Europe/Amsterdam") from exc
        return value

    def zone(self, default: str = "UTC") -> ZoneInfo:
        """The zone the cron is read in; `default` is the workspace's zone."""
        return ZoneInfo(self.timezone or default)

    @property
    def catch_up_window(self) -> timedelta:
        return parse_duration(self.catch_up)


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


class ManualOptions(Strict):
    """`manual: {}` has no options; the model exists so unknown keys are still refused."""


class ManualTrigger(Strict):
    """Start a run from chat or `teammates workflow run` only."""

    kind: ClassVar[str] = "manual"
    manual: Annotated[ManualOptions, BeforeValidator(_none_is_empty)]


class WebhookOptions(Strict):
    secret: str = Field(
        min_length=1,
        description="HMAC-SHA256 key for X-Teammates-Signature (v1); usually \"${VAR}\"",
    )


class WebhookTrigger(Strict):
    """Start a run from `POST /hooks/{workflow}`; the JSON body is the run's input."""

    kind: ClassVar[str] = "webhook"
    webhook: WebhookOptions


class EventOptions(Strict):
    name: EventName
    member: MemberId | None = Field(default=None, description="only events of this member")


class EventTrigger(Strict):
    """Start a run when the system emits an event, such as `approval.decided`."""

    kind: ClassVar[str] = "event"
    event: EventOptions


TRIGGER_TAGS = {
    "schedule": "schedule trigger",
    "manual": "manual trigger",
    "webhook": "webhook trigger",
    "event": "event trigger",
}


def _trigger_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [key for key in TRIGGER_TAGS if key in value]
        return TRIGGER_TAGS[found[0]] if len(found) == 1 else None
    kind = getattr(value, "kind", None)
    return TRIGGER_TAGS.get(kind) if isinstance(kind, str) else None


Trigger = Annotated[
    Union[  # noqa: UP007  (pydantic needs the tagged members spelled out)
        Annotated[ScheduleTrigger, Tag("schedule trigger")],
        Annotated[ManualTrigger, Tag("manual trigger")],
        Annotated[WebhookTrigger, Tag("webhook trigger")],
        Annotated[EventTrigger, Tag("event trigger")],
    ],
    Discriminator(
        _trigger_tag,
        custom_error_type="trigger_kind",
        custom_error_message="exactly one of schedule, manual, webhook or event",
    ),
]
