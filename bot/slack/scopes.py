"""What a member's Slack app must be granted: a bot scope for every Web API method the code
calls with the bot token, and an event subscription for every event type it listens to.

`teammates manifest` asks for exactly these, no more. Invariant, checked by
tests/test_manifest.py, which reads the code: every Slack Web API method the code calls is a
key of `METHOD_SCOPES` (or of `OTHER_TOKEN_METHODS`), every key is still called somewhere, and
every event type a Bolt listener is registered for is a key of `EVENT_SUBSCRIPTIONS`. So a new
`client.conversations_list(...)` fails that test until its scope is added here, and a scope
nothing uses any more is dropped from the manifest with its method.

Scopes per method are Slack's method reference ("Required scopes", bot token); where Slack
accepts one of several, the entry names the ones for the conversations a member works in:
public and private channels it was added to, and DMs.
"""

from __future__ import annotations

# Web API method -> the bot scopes it needs. () : no scope (still needs the bot token).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),  # Bolt on the first request; `teammates check`
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.open": ("im:write",),  # a DM with one person
    # Only on the crash-recovery path (find_effect): the same history scopes the message
    # events below need, for the conversation types the member listens in.
    "conversations.history": ("channels:history", "groups:history", "im:history"),
    "conversations.replies": ("channels:history", "groups:history", "im:history"),
    "reactions.add": ("reactions:write",),
    "reactions.remove": ("reactions:write",),
    "users.info": ("users:read", "users:read.email"),  # lookup_user returns the email too
    "usergroups.users.list": ("usergroups:read",),  # a user group as approver
    "views.open": (),  # authorised by the click's trigger_id
    "views.publish": (),  # the member's App Home for one person (no scope: the bot token)
}

# Methods called with another token than the bot's: they add nothing to the bot scopes.
OTHER_TOKEN_METHODS: dict[str, str] = {
    "apps.connections.open": "the app-level token (xapp-, scope connections:write) of a Socket Mode member",
    "apps.manifest.create": "the app configuration token of `teammates slack create-app`",
}

# Event type a Bolt listener is registered for -> the bot events to subscribe to. A `message`
# listener hears channels, private channels and DMs (group DMs are not served).
EVENT_SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "message": ("message.channels", "message.groups", "message.im"),
    "app_mention": ("app_mention",),
    "app_home_opened": ("app_home_opened",),  # the Home tab (its manifest enables it with this)
}

# Bot event -> the scope Slack requires for the subscription.
EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "message.channels": ("channels:history",),
    "message.groups": ("groups:history",),
    "message.im": ("im:history",),
    "message.mpim": ("mpim:history",),
    "app_mention": ("app_mentions:read",),
    "app_home_opened": (),
}

COMMAND_SCOPE = "commands"  # a slash command


def bot_events() -> list[str]:
    """The bot events of the manifest, sorted."""
    return sorted({event for events in EVENT_SUBSCRIPTIONS.values() for event in events})


def bot_scopes(*, slash_command: bool) -> list[str]:
    """The bot scopes of the manifest, sorted: the methods', the events', and `commands` for
    the member's slash command."""
    scopes = {scope for needed in METHOD_SCOPES.values() for scope in needed}
    scopes |= {scope for event in bot_events() for scope in EVENT_SCOPES[event]}
    if slash_command:
        scopes.add(COMMAND_SCOPE)
    return sorted(scopes)
