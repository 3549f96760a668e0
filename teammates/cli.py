"""The `teammates` command line: parses arguments and calls into the packages.

A user error (bad config, unreachable database...) prints one line on stderr and exits 2;
never a traceback. A decision that changed nothing (`approvals approve|reject` by someone who
may not, or of one decided already) prints one line and exits 1."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from storage.db import DatabaseUrlError
from teammates import logs
from teammates.config import ConfigError, LoadedConfig, load

log = logging.getLogger("teammates")

DEFAULT_WORKERS = 24
"""Sized for 20 people writing in the same few seconds while workflows run (see README)."""


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit 2, like every other user error (argparse's
    own would print the whole usage first). Subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="teammates", description="AI agents as virtual members of your Slack team.")
    parser.add_argument("--config", help="path to teammates.yml (default: $TEAMMATES_CONFIG or ./teammates.yml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="web server + workers + reconciler in one process tree")
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--port", type=int, default=3000)
    run.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"RQ worker processes = conversations answered at once (default {DEFAULT_WORKERS})",
    )

    serve = sub.add_parser("serve", help="web server only (for scale-out)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)

    worker = sub.add_parser("worker", help="one RQ worker with the scheduler (for scale-out)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--queues", default="turns,workflows,bulk", help="comma-separated, in priority order")
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes in this pool, one job each at a time")

    sub.add_parser("migrate", help="apply database migrations")

    chat = sub.add_parser("chat", help="talk to a member in the terminal")
    chat.add_argument("member")

    sub.add_parser("check", help="validate config and reach the database, Redis and Slack")

    workflow = sub.add_parser("workflow", help="apply, list, run, pause, resume and delete workflows")
    wsub = workflow.add_subparsers(dest="action", required=True, metavar="ACTION")
    wapply = wsub.add_parser(
        "apply", help="create workflows or new versions from YAML/JSON files: all are checked (members, tools, template "
                      "variables, handoff loops across them and the stored ones), then all stored, or none. A workflow "
                      "keeps its member: to move it to another, delete it and apply again",
    )
    wapply.add_argument("file", nargs="+")
    wapply.add_argument("--as", dest="as_person", metavar="PERSON",
                        help="who creates it (person id from people: or a Slack user id): the person of its scheduled and "
                             "webhook runs; default: the first of admins:")
    wsub.add_parser("list", help="workflows with status, version, trigger, last and next run").add_argument("--json", action="store_true")
    wrun = wsub.add_parser("run", help="start a run now; prints its id")
    wrun.add_argument("name")
    wrun.add_argument("--input", action="append", default=[], metavar="KEY=VALUE")
    wrun.add_argument("--as", dest="as_person", metavar="PERSON",
                      help="the person the run is started for (person id from people: or a Slack user id): its origin")
    wsub.add_parser("pause").add_argument("name")
    wsub.add_parser("resume").add_argument("name")
    wdelete = wsub.add_parser("delete", help="delete a workflow, its versions and runs; its schedule stops. Refused while "
                                             "runs are unfinished (unless --cancel-runs) or another workflow hands off to it")
    wdelete.add_argument("name")
    wdelete.add_argument("--cancel-runs", action="store_true", help="stop its unfinished runs and delete them with it")

    runs = sub.add_parser("runs", help="runs with each step's status, attempts and output; `runs cancel RUN_ID` stops a run "
                                       "and cancels its pending approvals")
    runs.add_argument("action", nargs="?", choices=["cancel"], help=argparse.SUPPRESS)
    runs.add_argument("run_id", nargs="?", help=argparse.SUPPRESS)
    runs.add_argument("--as", dest="as_person", metavar="PERSON", help="with cancel: who cancels it")
    runs.add_argument("--workflow")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--stats", action="store_true", help="per workflow: success rate and step latency p50/p95")

    approvals = sub.add_parser("approvals", help="pending approvals; `approvals show ID`; `approvals approve|reject ID --as "
                                                 "PERSON` decides one as that person (same rights as their click in Slack)")
    approvals.add_argument("--json", action="store_true")
    asub = approvals.add_subparsers(dest="action", required=False, metavar="ACTION")
    ashow = asub.add_parser("show", help="everything about one approval: draft, decisions, where its copies were posted")
    ashow.add_argument("approval_id", metavar="ID")
    ashow.add_argument("--json", action="store_true")
    for verb, helped in (("approve", "approve as PERSON: the run resumes"), ("reject", "reject as PERSON: the run resumes")):
        decide = asub.add_parser(verb, help=helped)
        decide.add_argument("approval_id", metavar="ID")
        decide.add_argument("--as", dest="as_person", metavar="PERSON", required=True,
                            help="who decides (person id from people: or a Slack user id); checked like their click")
        if verb == "approve":
            decide.add_argument("--content-file", metavar="FILE",
                                help="approve an edited draft instead (UTF-8, at most 3000 characters)")
        else:
            decide.add_argument("--reason", metavar="TEXT", help="why (at most 500 characters); the member learns from it")

    audit = sub.add_parser("audit", help="the audit trail: who asked, what was planned, who approved, what ran, what it cost")
    audit_sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    audit_export = audit_sub.add_parser("export", help="every plan, run, step, effect, approval, decision, activity row and "
                                                       "cost from a date on, one record per line (README: the columns)")
    audit_export.add_argument("--since", required=True, metavar="DATE",
                              help="a date (midnight in the workspace's time zone) or an ISO 8601 time")
    audit_export.add_argument("--format", default="jsonl", choices=["jsonl", "csv"])

    secret = sub.add_parser("secret", help="store secrets for workflows ({{ secrets.NAME }})")
    ssub = secret.add_subparsers(dest="action", required=True, metavar="ACTION")
    ssub.add_parser("set", help="value read from standard input").add_argument("name")
    ssub.add_parser("list", help="names only")

    usage = sub.add_parser("usage", help="LLM tokens and cost per member, person, workflow and day, and each budget's use")
    usage.add_argument("--member", help="only this member's calls")
    usage.add_argument("--person", help="only this person's calls (person id from people: or a Slack user id)")
    usage.add_argument("--since", metavar="DATE", help="from this date (YYYY-MM-DD, workspace time zone) or ISO 8601 time")
    usage.add_argument("--json", action="store_true")

    budget = sub.add_parser("budget", help="set or list budgets (LLM tokens or cost per day or month; a member's effects per day)")
    bsub = budget.add_subparsers(dest="action", required=True, metavar="ACTION")
    bset = bsub.add_parser("set", help="set, raise or lower a budget; running processes use it from their next call")
    bset.add_argument("scope", metavar="SCOPE", help="workspace | member:ID | person:ID (person:default: everyone without their own)")
    measure = bset.add_mutually_exclusive_group(required=True)
    measure.add_argument("--tokens", type=int, metavar="N", help="input, output and cache tokens together")
    measure.add_argument("--cost", type=float, metavar="X", help="in llm.prices units (the workspace currency)")
    measure.add_argument("--effects", type=int, metavar="N", help="with member:ID: external effects per day")
    bset.add_argument("--period", choices=["day", "month"], help="default: the budget's current period")
    bset.add_argument("--as", dest="as_person", metavar="PERSON", help="who sets it (person id from people: or a Slack user id)")
    bsub.add_parser("list", help="every budget's limit, use and what is left this period").add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="queues, workers, turn latency, tokens, cost and budget left")
    status.add_argument("--json", action="store_true")

    manifest = sub.add_parser("manifest", help="print a member's Slack app manifest (YAML, to paste into Slack)")
    manifest.add_argument("member")
    manifest.add_argument("--url", help="public base URL of `teammates serve` (required), like https://bots.example.com")

    slack = sub.add_parser("slack", help="Slack apps for members")
    slsub = slack.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_app = slsub.add_parser("create-app", help="create a member's Slack app with apps.manifest.create (needs "
                                                     "slack.config_token) and print the remaining steps")
    create_app.add_argument("member")
    create_app.add_argument("--url", help="public base URL of `teammates serve` (required), like https://bots.example.com")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        loaded = load(args.config)
        _install_tools(loaded)
        _check_tools(loaded)
        return _dispatch(args, loaded)
    except (ConfigError, DatabaseUrlError) as exc:
        print(f"teammates: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from storage.db import is_sqlite

    command = args.command
    if command in ("migrate", "chat", "run"):
        # Alembic is imported only by the commands that may migrate: ~0.15 s of every other
        # command's start-up.
        from storage.migrate import upgrade
    if command == "migrate":
        upgrade(loaded.config.database_url)
        print("database is up to date")
        return 0
    if command == "check":
        from teammates.check import check

        return 0 if asyncio.run(check(loaded, print)) else 1
    if command in ("workflow", "runs", "secret"):
        from teammates import workflows_cli as w

        if command == "runs" and args.action == "cancel":
            if not args.run_id:
                raise ConfigError("runs cancel: expected a run id")
            asyncio.run(w.cancel(loaded, args.run_id, args.as_person, print))
        elif command == "runs" and args.run_id:
            raise ConfigError(f"runs: unexpected argument {args.run_id!r}")
        elif command == "runs" and args.as_person:
            raise ConfigError("runs: --as goes with `runs cancel RUN_ID`")
        elif command == "runs" and args.stats:
            asyncio.run(w.run_stats(loaded, print, args.json))
        elif command == "runs":
            asyncio.run(w.list_runs(loaded, args.workflow, print, args.json))
        elif command == "secret":
            asyncio.run(w.secret_set(loaded, args.name, print) if args.action == "set" else w.secret_list(loaded, print))
        elif args.action == "apply":
            asyncio.run(w.apply(loaded, args.file, print, args.as_person))
        elif args.action == "delete":
            asyncio.run(w.delete(loaded, args.name, args.cancel_runs, print))
        elif args.action == "list":
            asyncio.run(w.list_workflows(loaded, print, args.json))
        elif args.action == "run":
            asyncio.run(w.run_now(loaded, args.name, args.input, print, args.as_person))
        else:
            asyncio.run(w.set_status(loaded, args.name, "paused" if args.action == "pause" else "active", print))
        return 0
    if command == "approvals":
        from teammates import approvals_cli as a

        if args.action == "show":
            asyncio.run(a.show(loaded, args.approval_id, print, args.json))
        elif args.action in ("approve", "reject"):
            try:
                asyncio.run(a.decide(loaded, args.approval_id, "approved" if args.action == "approve" else "rejected",
                                     args.as_person, print, reason=getattr(args, "reason", None),
                                     content_file=getattr(args, "content_file", None)))
            except a.Refused as exc:
                print(f"teammates: {exc}", file=sys.stderr)
                return 1
        else:
            asyncio.run(a.list_pending(loaded, print, args.json))
        return 0
    if command in ("usage", "budget"):
        from teammates import usage_cli as u

        if command == "usage":
            asyncio.run(u.report(loaded, print, member=args.member, person=args.person, since=args.since, as_json=args.json))
        elif args.action == "set":
            asyncio.run(u.budget_set(loaded, print, args.scope, tokens=args.tokens, cost=args.cost, effects=args.effects,
                                     period=args.period, as_person=args.as_person))
        else:
            asyncio.run(u.budget_list(loaded, print, args.json))
    if command == "audit":
        from teammates import audit_cli

        asyncio.run(audit_cli.export(loaded, args.since, args.format))
        return 0
    if command == "status":
        from teammates.status import status

        asyncio.run(status(loaded, print, args.json))
        return 0
    if command == "manifest":
        from teammates.manifest import render

        sys.stdout.write(render(loaded, args.member, args.url))
        return 0
    if command == "slack":
        from teammates.slack_app import SlackRefused, create_app

        try:
            create_app(loaded, args.member, args.url, print)
        except SlackRefused as exc:
            print(f"teammates: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "chat":
        from teammates.chat import chat

        loaded.config.member(args.member)
        if is_sqlite(loaded.config.database_url):
            upgrade(loaded.config.database_url)
        asyncio.run(chat(loaded, args.member))
        return 0
    from teammates import processes

    if command == "serve":
        asyncio.run(processes.serve(loaded, args.host, args.port))
    elif command == "worker":
        processes.work(loaded, [q.strip() for q in args.queues.split(",") if q.strip()], args.burst, args.concurrency)
    elif command == "run":
        if is_sqlite(loaded.config.database_url):
            upgrade(loaded.config.database_url)
        if args.workers < 1:
            raise ConfigError("--workers: expected at least 1")
        config_args = ["--config", str(loaded.path)] if args.config else []
        processes.run(loaded, args.host, args.port, args.workers, config_args)
    return 0


def _install_tools(loaded: LoadedConfig) -> None:
    """The config's business tools (and `send_email`) join the registry in every process:
    members list them, `workflow apply` checks against them, workers run them (a worker
    pool's forks inherit them)."""
    if not loaded.config.tools and loaded.config.email is None:
        return  # nothing to install: no import cost for commands of a config without them
    from jobs.business_tools import install

    install(loaded)


def _check_tools(loaded: LoadedConfig) -> None:
    from agents.tools.registry import known_tools

    known = set(known_tools())
    for member in loaded.config.members:
        for name in member.tools:
            if name not in known:
                hint = "; it comes with an email: section" if name == "send_email" else ""
                raise ConfigError(
                    f"{loaded.path}: members[{member.id}].tools: unknown tool {name!r} (known: {', '.join(sorted(known))}){hint}"
                )
