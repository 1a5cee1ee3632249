"""The ``ipv2`` command line: one subcommand per stage of the method.

Each subcommand lives in its own module ``ipv2.cli.<name>_cmd`` exposing
``register(subparsers)``; registration stores the function to call in ``args.run``,
which receives the parsed arguments and a reporter and returns the exit status.

Exit statuses: 0 done; 1 a one-line error the user can fix; 130 Ctrl+C, or a command's
own cooperative stop on a signal (``train`` checkpoints and reports ``stopped``,
``denoise`` stops between batches); 143 SIGTERM anywhere else (see
:mod:`ipv2.cli.termination`). A stop handled here removes partial outputs on the way
out, prints one line on stderr and, with ``--events jsonl``, ends with a ``done`` event
of status ``cancelled``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ipv2 import __version__
from ipv2.cli.common import make_reporter, plain_help
from ipv2.cli.termination import Terminated, terminate_as_interrupt
from ipv2.core.errors import CancelledError, IPv2Error, disk_full_message
from ipv2.core.events import Reporter
from ipv2.core.thread_pool import threads_restored

# In --help order: from data to results, then benchmarks.
COMMANDS: dict[str, str] = {
    "phantom": "phantom_cmd",
    "purify": "purify_cmd",
    "simulate": "simulate_cmd",
    "build-dataset": "build_dataset_cmd",
    "train": "train_cmd",
    "distill": "distill_cmd",
    "denoise": "denoise_cmd",
    "evaluate": "evaluate_cmd",
    "demo": "demo_cmd",
    "models": "models_cmd",
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
    plain_help(parser)  # descriptions are docstrings: no reStructuredText markup in --help
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = make_reporter(args)
    try:
        # SIGTERM unwinds like Ctrl+C: partial outputs go; --threads ends with the command.
        with terminate_as_interrupt(), threads_restored():
            status = int(args.run(args, reporter))
    except Terminated as exc:
        return _stopped(reporter, exc.message, exc.exit_status, signal=exc.signal_name)
    except CancelledError as exc:
        return _stopped(reporter, str(exc), 130)
    except KeyboardInterrupt:
        return _stopped(reporter, "interrupted; partial outputs removed", 130, signal="SIGINT")
    except IPv2Error as exc:
        return _failed(reporter, str(exc), human=getattr(args, "events", "human") == "human")
    except Exception as exc:
        message = disk_full_message(exc)
        if message is None:
            raise  # a bug: keep the traceback
        return _failed(reporter, message, human=getattr(args, "events", "human") == "human")
    reporter.close()
    return status


def _failed(reporter: Reporter, message: str, *, human: bool) -> int:
    """A one-line error: the ``error`` event, and on stderr also under ``--events jsonl``."""
    reporter.close()
    reporter.error(message)
    if not human:
        print(f"error: {message}", file=sys.stderr)
    return 1


def _stopped(reporter: Reporter, message: str, exit_status: int, **extra: str) -> int:
    """A command stopped on request: the ``done`` event, one line for people, the status.

    The line goes to stderr in both modes (with ``--events jsonl`` stdout carries only
    events), so a log, a terminal or a panel's log tail shows why the command ended.
    """
    reporter.close()
    reporter.done(status="cancelled", message=message, **extra)
    print(message, file=sys.stderr, flush=True)
    return exit_status
