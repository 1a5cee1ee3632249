"""The ``ipv2`` command line: one subcommand per stage of the method.

Each subcommand lives in its own module ``ipv2.cli.<name>_cmd`` exposing
``register(subparsers)``; registration stores the function to call in ``args.run``,
which receives the parsed arguments and a reporter and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ipv2 import __version__
from ipv2.cli.common import make_reporter
from ipv2.core.errors import CancelledError, IPv2Error

# In --help order: from data to results, then benchmarks.
COMMANDS: dict[str, str] = {
    "phantom": "phantom_cmd",
    "purify": "purify_cmd",
    "simulate": "simulate_cmd",
    "build-dataset": "build_dataset_cmd",
    "train": "train_cmd",
    "denoise": "denoise_cmd",
    "evaluate": "evaluate_cmd",
    "demo": "demo_cmd",
    "bench": "bench_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipv2",
        description=(
            "IPv2 image purification and frequency-domain flow matching for real-world "
            "ultra-low-dose lung CT."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ipv2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"ipv2.cli.{module_name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = make_reporter(args)
    try:
        status = int(args.run(args, reporter))
    except CancelledError as exc:
        reporter.close()
        reporter.done(status="cancelled", message=str(exc))
        return 130
    except KeyboardInterrupt:
        reporter.close()
        reporter.done(status="cancelled", message="interrupted")
        return 130
    except IPv2Error as exc:
        reporter.close()
        reporter.error(str(exc))
        if getattr(args, "events", "human") != "human":
            print(f"error: {exc}", file=sys.stderr)
        return 1
    reporter.close()
    return status
