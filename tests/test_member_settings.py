"""An admin changes a member from chat (the `config` form): the next turn uses it, every
process within seconds, and it wins over the config file until the file's own value changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import ANA, BOB, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply


def opened_form(stack: Stack, user: str) -> dict[str, Any] | str:
    """The modal as Slack would hold it after `views.open` (built by the same code)."""
    from bot.slack.actions import form_metadata
    from bot.slack.blocks import form_view
    from jobs.member_settings import form_for
    from storage.db import Database
    from teammates.config import load

    async def build() -> Any:
        db = Database(stack.env["DATABASE_URL"])
        try:
            return await form_for(db, load(str(stack.workdir / "teammates.yml"), env=stack.env).config, "nova", user)
        finally:
            await db.close()

    form = asyncio.run(build())
    if isinstance(form, str):
        return form
    return {**form_view(form, form_metadata(form, None)), "id": "V0CONFIG001"}


def system_prompt(body: dict[str, Any]) -> str:
    return json.dumps(body.get("system"))


def saved(stack: Stack) -> list[str]:
    return [p["text"] for p in stack.slack.posts_by(NOVA["token"]) if p["text"].startswith(("Saved:", "Nothing changed", "Only an admin"))]


VALUES = {"role": "Finance & Admin", "description": "Tracks invoices and payments, sends reminders.",
          "persona": "Speaks like a ship's captain.", "autonomy": "approve", "approvals_channel": "",
          "activity_channel": "<#C0GENERAL1|general>", "timezone": "Europe/Lisbon", "budget": "90 EUR/month"}


def test_a_config_form_changes_the_persona_the_next_turn_uses_and_wins_over_the_file_until_it_changes(stack: Stack) -> None:
    stack.up()
    seen: list[dict[str, Any]] = []
    stack.llm.set_responder(lambda body: (seen.append(body), Reply(text="Aye."))[1])
    assert opened_form(stack, BOB) == "Only an admin can change my settings."
    view = opened_form(stack, ANA)
    assert isinstance(view, dict)
    from slack_sdk.models.views import View

    modal = {k: v for k, v in view.items() if k != "id"}
    model = View(**modal)
    model.validate_json()  # Slack's own rules, as slack_sdk knows them
    assert model.to_dict() == modal
    status, _ = stack.driver().view_submission(view, VALUES, user_id=ANA)
    assert status == 200
    wait_until(lambda: saved(stack), what="the saved notice")
    assert saved(stack)[0] == "Saved: persona, timezone, channels, budget. Every part of the team uses it within seconds."

    stack.driver().dm(ANA, "who are you?", channel=NOVA_DM)
    wait_until(lambda: seen, what="the next turn")
    assert "Speaks like a ship's captain." in system_prompt(seen[0])
    listed = json.loads(stack.cli("budget", "list", "--json").stdout)
    [nova] = [b for b in (listed if isinstance(listed, list) else listed["budgets"]) if b["scope"] == "member:nova"]
    assert (nova["metric"], nova["limit"], nova["period"], nova["set_by"]) == ("cost", 90.0, "month", ANA)

    # A non-admin's submission (a form kept open, or forged) changes nothing.
    stack.driver().view_submission({**view, "id": "V0CONFIG002"}, {**VALUES, "persona": "Rude."}, user_id=BOB)
    wait_until(lambda: len(saved(stack)) == 2, what="the refusal")
    assert saved(stack)[1] == "Only an admin can change my settings; nothing changed."
    # A bad value changes nothing and says which field.
    stack.driver().view_submission({**view, "id": "V0CONFIG003"}, {**VALUES, "persona": "Quiet.", "timezone": "Mars/Base"}, user_id=ANA)
    wait_until(lambda: len(saved(stack)) == 3, what="the bad value's answer")
    assert saved(stack)[2] == "Nothing changed. Time zone: an IANA name such as Europe/Amsterdam, not 'Mars/Base'."

    # Every start seeds from the file (here: a CLI command): the chat's value stays ...
    assert stack.cli("workflow", "list").returncode == 0
    stack.driver().dm(ANA, "still there?", channel=NOVA_DM)
    wait_until(lambda: len(seen) == 2, what="the second turn")
    assert "Speaks like a ship's captain." in system_prompt(seen[1])
    # ... until the file's own value changes: then the file wins.
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace("Professional but friendly.", "Terse and exact."))
    assert stack.cli("workflow", "list").returncode == 0
    stack.driver().dm(ANA, "and now?", channel=NOVA_DM)
    wait_until(lambda: len(seen) == 3, what="the third turn")
    assert "Terse and exact." in system_prompt(seen[2]) and "ship's captain" not in system_prompt(seen[2])

    from tests.test_turns import activity_rows

    lines = [r["description"] for r in activity_rows(stack, "member.config")]
    assert len(lines) == 4 and any("persona" in line and "ship's captain" in line for line in lines)
