"""Things go wrong: the LLM is rate limited or down, the web process dies after the ack,
two members share a process. Nobody gets a wrong, doubled or lost answer."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

from tests.conftest import (
    ANA,
    CASEY,
    CASEY_DM,
    GENERAL,
    NOVA,
    NOVA_DM,
    Stack,
    free_port,
    wait_until,
)
from tests.fakes.anthropic_api import Fail, Reply


def test_llm_rate_limit_then_success_gives_one_reply(stack: Stack) -> None:
    stack.up()
    stack.llm.script(Fail(status=429, retry_after=0.2), Reply(text="Here you go."))
    stack.driver().dm(ANA, "status?", channel=NOVA_DM)
    [reply] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["text"] == "Here you go."
    assert len(stack.llm.requests) == 2


def test_llm_down_gives_an_apology_and_the_message_can_be_retried(stack: Stack) -> None:
    stack.up()
    stack.llm.set_responder(lambda _body: Fail(status=529))
    stack.driver().dm(ANA, "Draft the reminder for Acme", channel=NOVA_DM)
    [apology] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert apology["text"].startswith("Sorry")
    buttons = [e for b in apology["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["text"]["text"] for b in buttons] == ["Try again"]

    # The service is back; Ana presses "Try again".
    stack.llm.set_responder(None)
    stack.llm.script(Reply(text="Draft: Dear Acme, ..."))
    status, _ = stack.driver().block_action(
        buttons[0]["action_id"], buttons[0]["value"], user_id=ANA, channel_id=NOVA_DM, message_ts=apology["ts"]
    )
    assert status == 200
    posts = stack.slack.wait_for_posts(2, token=NOVA["token"])
    assert posts[1]["text"] == "Draft: Dear Acme, ..."
    last = stack.llm.requests[-1]["body"]["messages"][-1]["content"]
    assert "Draft the reminder for Acme" in json.dumps(last)
    # A second click after the answer does nothing.
    stack.driver().block_action(buttons[0]["action_id"], buttons[0]["value"], user_id=ANA, channel_id=NOVA_DM, message_ts=apology["ts"])
    stack.llm.script(Reply(text="marker"))
    stack.driver().dm(ANA, "thanks", channel=NOVA_DM)
    assert [p["text"] for p in stack.slack.wait_for_posts(3, token=NOVA["token"])][2] == "marker"


def test_message_acked_just_before_the_web_process_dies_is_still_answered(stack: Stack) -> None:
    stack.start_web()
    stack.llm.script(Reply(text="Still here."))
    status, _, _ = stack.driver().dm(ANA, "are you there?", channel=NOVA_DM)
    assert status == 200
    stack.stop("web", sig=signal.SIGKILL)
    stack.start_worker()
    # The turn job is enqueued after the ack, so the dead process may never have handed it to
    # Redis: the recorded row is the hand-off, and the web process started again takes it over
    # (the sweeper of any other web process would, within minutes).
    stack.start_web()
    [reply] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["text"] == "Still here."
    assert len(stack.slack.wait_for_posts(1, token=NOVA["token"])) == 1


def test_two_members_in_one_process_answer_with_their_own_tokens(stack: Stack) -> None:
    stack.up(workers=2)
    stack.llm.set_responder(lambda body: Reply(text="from " + body["system"][0]["text"].split(",")[0]))
    for i in range(3):
        stack.driver("nova").dm(ANA, f"nova {i}", channel=NOVA_DM)
        stack.driver("casey").dm(ANA, f"casey {i}", channel=CASEY_DM)
    # Quick messages of one conversation may be answered together (one folded answer).
    seen = lambda: json.dumps([r["body"]["messages"] for r in stack.llm.requests])  # noqa: E731
    wait_until(lambda: "nova 2" in seen() and "casey 2" in seen(), what="every message read")
    stack.slack.wait_for_posts(1, token=NOVA["token"])
    stack.slack.wait_for_posts(1, token=CASEY["token"])
    time.sleep(1)
    nova_posts = stack.slack.posts_by(NOVA["token"])
    casey_posts = stack.slack.posts_by(CASEY["token"])
    assert {p["channel"] for p in nova_posts} == {NOVA_DM}
    assert {p["channel"] for p in casey_posts} == {CASEY_DM}
    assert {p["text"] for p in nova_posts} == {"from You are Nova"}
    assert {p["text"] for p in casey_posts} == {"from You are Casey"}


def test_tools_post_to_a_channel_and_look_up_a_colleague(stack: Stack) -> None:
    stack.up()
    stack.llm.script(
        Reply(tool_uses=[{"name": "lookup_user", "input": {"user_id": ANA}}]),
        Reply(tool_uses=[{"name": "post_message", "input": {"channel": GENERAL, "text": "Invoices are due Friday."}}]),
        Reply(tool_uses=[{"name": "post_message", "input": {"channel": "C0NOTHERE1", "text": "x"}}]),
        Reply(text="Done: I posted it in #general."),
    )
    stack.driver().dm(ANA, "Tell #general invoices are due Friday", channel=NOVA_DM)
    posts = stack.slack.wait_for_posts(3, token=NOVA["token"])
    # #general is a team room (casey's approvals channel): posted at once. Any other channel
    # is outside the team: Nova asks Ana first with a card (tests/test_autonomy.py).
    assert posts[0]["channel"] == GENERAL and posts[0]["text"] == "Invoices are due Friday."
    assert posts[1]["channel"] == NOVA_DM and posts[1]["text"].startswith("Nova wants to post in <#C0NOTHERE1>")
    assert posts[2]["channel"] == NOVA_DM and posts[2]["text"] == "Done: I posted it in #general."
    requests = stack.llm.requests
    lookup = json.dumps(requests[1]["body"]["messages"][-1])
    assert "Ana de Vries" in lookup and "ana@acme.test" in lookup
    asked = requests[3]["body"]["messages"][-1]["content"][0]
    assert not asked.get("is_error") and "confirm" in asked["content"]
    # Nova's configured tools, then the workflow tools every member has.
    assert [t["name"] for t in requests[0]["body"]["tools"]] == [
        "get_thread_history", "lookup_user", "post_message", "create_workflow", "update_workflow", "list_my_workflows",
        "pause_workflow", "resume_workflow", "run_workflow_now", "cancel_run"]


def test_slack_rate_limit_on_the_reply_delays_but_never_drops_it(stack: Stack) -> None:
    stack.up()
    stack.slack.fail_next("chat.postMessage", status=429, retry_after=1, times=2)
    stack.llm.script(Reply(text="Patience pays."))
    stack.driver().dm(ANA, "hi", channel=NOVA_DM)
    [reply] = stack.slack.wait_for_posts(1, token=NOVA["token"])
    assert reply["text"] == "Patience pays."
    assert [c["status"] for c in stack.slack.calls_to("chat.postMessage")] == [429, 429, 200]


def test_health_and_metrics(stack: Stack) -> None:
    stack.start_web()
    with urllib.request.urlopen(stack.url + "/healthz") as response:
        assert json.loads(response.read()) == {"status": "ok", "database": "ok", "redis": "ok"}
    stack.driver().dm(ANA, "count me", channel=NOVA_DM)
    assert 'teammates_inbound_total{member="nova",outcome="queued",platform="slack"} 1.0' in stack.scrape()
    # On the public port, only with the bearer token.
    assert _get(stack.url + "/metrics")[0] == 401
    assert _get(stack.url + "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    status, text = _get(stack.url + "/metrics", {"Authorization": "Bearer metrics-test-token"})
    assert status == 200 and "teammates_inbound_total" in text
    try:
        urllib.request.urlopen(urllib.request.Request(stack.url + "/slack/nobody/events", data=b"{}"))
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404


def test_health_names_redis_when_it_is_down(stack: Stack) -> None:
    stack.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    stack.start("web", "serve", "--host", "127.0.0.1", "--port", str(stack.port))
    body = wait_until(lambda: _health(stack.url), timeout=30, what="healthz to answer")
    assert body == (503, {"status": "unavailable", "database": "ok", "redis": "unreachable"})
    # A message is still acked: it is recorded, and its job waits for Redis (tests/test_ack_faults.py).
    status, _, _ = stack.driver().dm(ANA, "hello?", channel=NOVA_DM)
    assert status == 200


def test_metrics_without_a_token_are_not_on_the_public_port(stack: Stack) -> None:
    config = stack.workdir / "teammates.yml"
    config.write_text(config.read_text().replace(', token: "${TEAMMATES_METRICS_TOKEN}"', ""))
    stack.start_web()
    assert _get(stack.url + "/metrics", {"Authorization": "Bearer metrics-test-token"})[0] == 404
    assert "teammates_queue_depth" in stack.scrape()


def test_health_answers_within_two_seconds_when_redis_hangs(stack: Stack) -> None:
    import socket
    import time

    silent = socket.socket()  # accepts connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        stack.env["REDIS_URL"] = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        stack.start("web", "serve", "--host", "127.0.0.1", "--port", str(stack.port))
        wait_until(lambda: _health(stack.url), timeout=30, what="healthz to answer")
        began = time.monotonic()
        body = _health(stack.url)
        assert time.monotonic() - began < 2.8
        assert body == (503, {"status": "unavailable", "database": "ok", "redis": "timeout"})
    finally:
        silent.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _health(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None
