"""The ``ipv2`` command line: one subcommand per stage of the method.

Each subcommand lives in its own module ``ipv2.cli.<name>_cmd`` exposing
``register(subparsers)``; registration stores the function to call in ``args.run``,
which receives the parsed arguments and a reporter and returns the exit status. A
command whose module has not landed yet is listed anyway and exits with status 2,
naming the issue that brings it, so the command set is stable from the start.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ipv2 import __version__
from ipv2.cli.common import make_reporter
from ipv2.errors import CancelledError, IPv2Error
from ipv2.events import Reporter

# command -> (module under ipv2.cli, one-line summary, issue that brings it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "phantom": ("phantom_cmd", "write the ground-truth chest phantom pairs", "#2"),
    "purify": ("purify_cmd", "purification masks, training inputs and labels", "#3"),
    "simulate": ("simulate_cmd", "simulate ultra-low-dose CT from normal-dose CT", "#4"),
    "build-dataset": ("build_dataset_cmd", "build purified training and label sets", "#3"),
    "train": ("train_cmd", "train FFM, FM, CoreDiff, Cold Diffusion or a regressor", "#5"),
    "denoise": ("denoise_cmd", "denoise a volume with a trained model", "#6"),
    "evaluate": ("evaluate_cmd", "FID, KID, CLIP-FID and ground-truth metrics", "#6"),
    "demo": ("demo_cmd", "the whole method end to end on the built-in phantom", "#6"),
    "bench": ("bench_cmd", "benchmarks that print timings", "#2"),
}


def _load(module: str) -> ModuleType | None:
    full = f"ipv2.cli.{module}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name == full:
            return None
        raise


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
    for name, (module_name, summary, issue) in COMMANDS.items():
        module = _load(module_name)
        if module is not None:
            module.register(sub)
            continue
        pending = sub.add_parser(name, help=f"{summary} (not built yet: issue {issue})")
        pending.set_defaults(run=_not_built, pending=(name, summary, issue))
    return parser


def _not_built(args: argparse.Namespace, reporter: Reporter) -> int:
    name, summary, issue = args.pending
    print(f"ipv2 {name}: not built yet ({summary}); it arrives with issue {issue}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.run is not _not_built:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
