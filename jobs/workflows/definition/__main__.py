"""`python -m jobs.workflows.definition > docs/workflow.schema.json` publishes the schema."""

from __future__ import annotations

import json
import sys

from jobs.workflows.definition.workflow import json_schema


def main() -> None:
    """Print the JSON Schema (the `python -m jobs.workflows.definition` entry)."""
    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
