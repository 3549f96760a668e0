"""Secrets as a step's templates see them.

Only a tool step's `args` may read `secrets` (`workflow apply` refuses them anywhere else); every
other template — `when`, `foreach`, conditions, posts, prompts, approvals, handoffs — renders
with a view that refuses every read, so a definition stored before that check cannot leak a
value either. A tool step that reads secrets loads the stored ciphertexts once and decrypts a
value on its first read: a run that reads no secret never touches the secrets table, and a row
that cannot be decrypted fails only the steps that read it."""

from __future__ import annotations

from typing import Any

from jobs.workflows import templates
from jobs.workflows.definition import Step, ToolStep
from jobs.workflows.definition.workflow import strings
from storage import secrets as secret_store

NOT_HERE = "secrets may only be read in a tool step's args"


def refusing() -> templates.SecretsView:
    """The view for every template outside a tool step's args."""
    return templates.SecretsView.refusing(NOT_HERE)


def reads_secrets(step: Step) -> bool:
    """Does this tool step's `args` read `secrets` anywhere?"""
    return isinstance(step, ToolStep) and any(templates.reads_secrets(text) for _, text in strings(step.args, ""))


async def view_for(session: Any, step: Step, key: str | None) -> templates.SecretsView:
    """The secrets view for running `step`: lazily decrypting for a tool step whose args read
    secrets, refusing for anything else (without a query)."""
    if not reads_secrets(step):
        return refusing()
    sealed = await secret_store.sealed(session, key)
    return templates.SecretsView(names=sealed.ciphertexts, opener=sealed.open)

