"""The activity feed in Slack: what members did, beside what people did, one line each."""
