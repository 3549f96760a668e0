"""The member's console in chat: its slash command (`/nova status`) and its home tab.

Both show the same facts (`facts`) as plain cards (`pages`); the adapters render them. What a
person may see or do is decided here (`commands`, `controls`), never in an adapter: everyone
may look at the member, its workflows, their own approvals and spend; admins may pause,
resume, configure the member and see the whole team.
"""
