"""Options and helpers every subcommand shares."""

from __future__ import annotations

import argparse

from ipv2.events import ConsoleReporter, JsonlReporter, Reporter


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


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
