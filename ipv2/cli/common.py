"""Options and helpers every subcommand shares.

``add_device_option`` lives with the device rule in :mod:`ipv2.core.devices` (the benchmarks
use it too) and is re-exported here for the commands.
"""

from __future__ import annotations

import argparse

from ipv2.core.devices import add_device_option
from ipv2.core.events import ConsoleReporter, JsonlReporter, Reporter


def add_events_option(parser: argparse.ArgumentParser) -> None:
    """``--events jsonl`` switches progress output to machine-readable JSON lines."""
    parser.add_argument(
        "--events",
        choices=("human", "jsonl"),
        default="human",
        help="progress format: bars for people (default) or JSON lines on stdout for programs",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or metric lines")


def make_reporter(args: argparse.Namespace) -> Reporter:
    if getattr(args, "events", "human") == "jsonl":
        return JsonlReporter()
    return ConsoleReporter(quiet=bool(getattr(args, "quiet", False)))


__all__ = ["add_device_option", "add_events_option", "make_reporter"]
