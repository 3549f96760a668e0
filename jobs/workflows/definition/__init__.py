"""The workflow definition format (YAML or JSON): models, loading, and its published JSON Schema.

`load_definition` is the one way in from user text; every problem becomes one `DefinitionError`
line. The package is split by what a reader looks for:

- `fields`: the value types (names, durations, templates, times) and the strict base model;
- `triggers`: `schedule`, `manual`, `webhook`, `event`, and their union `Trigger`;
- `steps`: the step models, their retry policy, and their union `Step`;
- `workflow`: `WorkflowDefinition`, the walk over its steps (`iter_steps`), where secrets may
  be read, the stored form (`as_document`) and the JSON Schema;
- `loading`: YAML/JSON parsing, `load_definition`, and the one-line error descriptions.

Callers import from this package, not from its modules. Run
`python -m jobs.workflows.definition > docs/workflow.schema.json` to publish the schema.
"""

from jobs.workflows.definition.fields import (
    Duration,
    DurationOrNever,
    EventName,
    Expression,
    Identifier,
    Items,
    MemberId,
    Platform,
    RemindAt,
    Slug,
    StepId,
    ToolName,
    Until,
)
from jobs.workflows.definition.loading import DefinitionError, load_definition
from jobs.workflows.definition.steps import (
    MAX_FOREACH_CONCURRENCY,
    STEP_KINDS,
    AgentStep,
    ApprovalRequest,
    ApprovalStep,
    Condition,
    ConditionStep,
    ForeachStep,
    Handoff,
    HandoffStep,
    ParallelStep,
    PostMessage,
    PostStep,
    RetryPolicy,
    Step,
    ToolStep,
    WaitStep,
)
from jobs.workflows.definition.triggers import (
    EventOptions,
    EventTrigger,
    ManualOptions,
    ManualTrigger,
    ScheduleTrigger,
    Trigger,
    WebhookOptions,
    WebhookTrigger,
)
from jobs.workflows.definition.workflow import (
    InputType,
    WorkflowDefinition,
    WorkflowInput,
    as_document,
    iter_steps,
    json_schema,
    secret_placement,
)

__all__ = [
    "MAX_FOREACH_CONCURRENCY",
    "STEP_KINDS",
    "AgentStep",
    "ApprovalRequest",
    "ApprovalStep",
    "Condition",
    "ConditionStep",
    "DefinitionError",
    "Duration",
    "DurationOrNever",
    "EventName",
    "EventOptions",
    "EventTrigger",
    "Expression",
    "ForeachStep",
    "Handoff",
    "HandoffStep",
    "Identifier",
    "InputType",
    "Items",
    "ManualOptions",
    "ManualTrigger",
    "MemberId",
    "ParallelStep",
    "Platform",
    "PostMessage",
    "PostStep",
    "RemindAt",
    "RetryPolicy",
    "ScheduleTrigger",
    "Slug",
    "Step",
    "StepId",
    "ToolName",
    "ToolStep",
    "Trigger",
    "Until",
    "WaitStep",
    "WebhookOptions",
    "WebhookTrigger",
    "WorkflowDefinition",
    "WorkflowInput",
    "as_document",
    "iter_steps",
    "json_schema",
    "load_definition",
    "secret_placement",
]
