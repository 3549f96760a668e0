"""Small helpers every benchmark in bench/ uses, and the `main()` they all share.

Why a module of its own: the rigs (bench/_stack.py, bench/_engine_stack.py) and the scripts
need the same percentile, logging and polling helpers and the same exit-status contract; one
copy here keeps them from drifting apart. Nothing in it starts a process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import redis

__all__ = ["exit_on_signals", "healthy", "log", "pct", "pings", "run_bench", "wait_until"]

R = TypeVar("R")


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a real observation)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout holds only the report (and `--json` stays parseable)."""
    print(msg, file=sys.stderr, flush=True)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `check` every 50 ms; a RuntimeError naming `what` once `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    """Whether the web process at `url` answers its /healthz with 200 (False while it starts)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def pings(client: redis.Redis) -> bool:
    """Whether Redis answers (False while redis-server is still starting)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def exit_on_signals() -> None:
    """Ctrl-C and SIGTERM raise at once, wherever the bench is, so `finally` cleans up.

    Why not leave SIGINT alone: `asyncio.Runner` (and so `asyncio.run`) turns Ctrl-C into a
    cancellation of the running coroutine, which a database call can swallow (seen in the
    engine benches: the bench carried on). Runner leaves a handler other than Python's default
    in place, so this one wins. SIGTERM exits with 128 + 15, as a shell reports it."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def run_bench(parser: argparse.ArgumentParser, measure: Callable[[argparse.Namespace], R],
              report: Callable[[R, argparse.Namespace], None],
              sound: Callable[[R, argparse.Namespace], bool]) -> int:
    """The `main()` of every bench: parse, measure, report; the exit status.

    `measure` owns its processes and stops them in its own `finally`, so the report is printed
    with the machine quiet again. Exit status: 130 when interrupted (nothing is reported), 1
    when `sound` says the figures are suspect (a lost reply, a failed job...), else 0: the
    targets themselves are reported, never enforced."""
    args = parser.parse_args()
    exit_on_signals()
    try:
        result = measure(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    report(result, args)
    return 0 if sound(result, args) else 1
