"""A person talks to Nova in Slack: DMs, mentions, threads, memory — over real HTTP, a real
Redis and real worker processes."""

from __future__ import annotations

from tests.conftest import ANA, BOB, GENERAL, NOVA, NOVA_DM, Stack, wait_until
from tests.fakes.anthropic_api import Reply


def user_texts(request: dict) -> list[str]:
    """Every text the model was shown in the conversation (user and assistant turns)."""
    texts = []
    for message in request["body"]["messages"]:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(block.get("text", "") for block in content if block.get("type") == "text")
    return texts


def test_dm_is_answered_in_the_dm_with_novas_token(stack: Stack) -> None:
    stack.up()
    stack.llm.script(Reply(text="Hi Ana, three invoices are overdue."))
    status, _, ts = stack.driver().dm(ANA, "Which invoices are overdue?", channel=NOVA_DM)
    assert status == 200
    [reply] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["channel"] == NOVA_DM
    assert reply["text"] == "Hi Ana, three invoices are overdue."
    assert reply.get("thread_ts") is None  # a DM is answered in place, not in a thread
    [request] = stack.llm.requests
    system = " ".join(block["text"] for block in request["body"]["system"])
    assert "Nova" in system and "Finance & Admin" in system and "Acme BV" in system
    assert request["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert user_texts(request)[-1] == "Which invoices are overdue?"
    # the "working" reaction was shown and removed again once the reply landed
    assert [c["params"].get("name") for c in stack.slack.calls_to("reactions.add")] == ["eyes"]
    wait_until(lambda: stack.slack.reactions(NOVA_DM, ts) == [], what="working reaction removed")


def test_mention_gets_a_threaded_reply_and_followups_keep_the_thread(stack: Stack) -> None:
    stack.up()
    nova = stack.driver()
    stack.llm.script(Reply(text="Sure, I'll look at the Q3 invoices."), Reply(text="Acme owes 1,200 EUR."))
    statuses, ts = nova.mention(ANA, "can you check the Q3 invoices?", channel=GENERAL)
    assert statuses == [200, 200]  # app_mention and its message.channels twin
    [first] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert first["channel"] == GENERAL and first["thread_ts"] == ts

    # A follow-up in the thread, without a mention, from another person.
    status, _, _ = nova.channel_message(BOB, "and what does Acme owe?", channel=GENERAL, thread_ts=ts)
    assert status == 200
    posts = stack.slack.wait_for_posts(2, token=NOVA["token"])
    assert posts[1]["thread_ts"] == ts and posts[1]["text"] == "Acme owes 1,200 EUR."
    requests = stack.llm.requests
    assert len(requests) == 2  # the twin delivery of the mention did not cause a second turn
    seen = "\n".join(user_texts(requests[1]))
    assert "check the Q3 invoices" in seen and "I'll look at the Q3 invoices" in seen
    assert f"<@{BOB}>: and what does Acme owe?" in seen

    # A thread Nova is not part of, and a plain channel message: no answer.
    other = stack.slack.add_message(GENERAL, BOB, "lunch?")
    nova.channel_message(ANA, "yes please", channel=GENERAL, thread_ts=other)
    nova.channel_message(ANA, "good morning all", channel=GENERAL)
    stack.llm.script(Reply(text="Noted."))
    nova.dm(ANA, "ping", channel=NOVA_DM)
    posts = stack.slack.wait_for_posts(3, token=NOVA["token"])
    assert [p["text"] for p in posts] == ["Sure, I'll look at the Q3 invoices.", "Acme owes 1,200 EUR.", "Noted."]


def test_history_survives_restarting_every_process(stack: Stack) -> None:
    stack.up()
    stack.llm.script(Reply(text="Got it: reminders go out on Mondays."))
    stack.driver().dm(ANA, "Please remember: reminders go out on Mondays.", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"])

    stack.stop_all()
    stack.up()
    stack.llm.script(Reply(text="On Mondays."))
    stack.driver().dm(ANA, "When do reminders go out?", channel=NOVA_DM)
    stack.slack.wait_for_posts(2, token=NOVA["token"])
    seen = user_texts(stack.llm.requests[-1])
    assert seen[0] == "Please remember: reminders go out on Mondays."
    assert seen[1] == "Got it: reminders go out on Mondays."
    assert seen[-1] == "When do reminders go out?"


def test_redeliveries_and_bot_messages_get_no_second_reply(stack: Stack) -> None:
    stack.up()
    nova = stack.driver()
    stack.llm.script(Reply(text="Only once."))
    status, event_id, ts = nova.dm(ANA, "hello", channel=NOVA_DM)
    assert status == 200
    event = {"type": "message", "user": ANA, "text": "hello", "ts": ts, "channel": NOVA_DM, "channel_type": "im", "event_ts": ts}
    for retry in (1, 2):
        status, _ = nova.send_event(event, event_id=event_id, retry_num=retry)
        assert status == 200
    stack.slack.wait_for_posts(1, token=NOVA["token"])

    # Nova's own message, another member's message and an integration's post: all ignored.
    nova.bot_message(NOVA["bot"], "I am Nova", channel=NOVA_DM, channel_type="im", user=NOVA["user"], subtype=None)
    nova.bot_message("B0CASEY001", "<@U0NOVA0001> hi from Casey", channel=GENERAL, user="U0CASEY001", subtype=None)
    nova.bot_message("B0INTEGRAT", "<@U0NOVA0001> build failed", channel=GENERAL)
    stack.llm.script(Reply(text="Second."))
    nova.dm(ANA, "marker", channel=NOVA_DM)
    posts = stack.slack.wait_for_posts(2, token=NOVA["token"])
    assert [p["text"] for p in posts] == ["Only once.", "Second."]
    assert len(stack.llm.requests) == 2


def test_bad_signatures_and_stale_requests_are_refused(stack: Stack) -> None:
    stack.start_web()
    nova = stack.driver()
    event = {"type": "message", "user": ANA, "text": "hi", "ts": "1700000000.000100", "channel": NOVA_DM, "channel_type": "im"}
    assert nova.send_event(event, bad_signature=True)[0] == 401
    assert nova.send_event(event, timestamp=int(__import__("time").time()) - 6 * 60)[0] == 401
    casey_signed = stack.driver("casey")
    casey_signed.url = nova.url  # signed with Casey's secret, sent to Nova's endpoint
    assert casey_signed.send_event(event)[0] == 401
    stack.start_worker()
    stack.llm.script(Reply(text="after"))
    nova.dm(ANA, "real one", channel=NOVA_DM)
    stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert len(stack.llm.requests) == 1
    assert user_texts(stack.llm.requests[0])[-1] == "real one"
