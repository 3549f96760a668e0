"""Workflow definitions: the published YAML/JSON format, its durations and its templates."""
