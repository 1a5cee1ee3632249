"""Options and helpers every subcommand shares.

``add_device_option`` and ``add_threads_option`` live with the device and thread rules in
:mod:`ipv2.core.devices` (the benchmarks use them too) and are re-exported here for the
commands.
"""

from __future__ import annotations

import argparse
import re

from ipv2.core.devices import add_device_option, add_threads_option, apply_threads
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


def add_match_uldct_flag(parser: argparse.ArgumentParser) -> None:
    """``--match-uldct`` for commands that have the real uLDCT at hand (purify, build-dataset).

    One flag and one help text, so both commands fit Module 2's dose the same way
    (:class:`ipv2.simulation.simulator.Simulator` with ``match_uldct``).
    """
    parser.add_argument(
        "--match-uldct",
        action="store_true",
        help="fit Module 2's dose per case so the simulated noise in the lungs matches that "
        "case's real uLDCT (no seam between simulated lungs and the rest of the input)",
    )


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """reStructuredText inline markup -> plain text: ``x`` and :func:`x` become x.

    The commands' descriptions are their module docstrings, written for the API docs;
    ``--help`` is read in a terminal, where the backticks are noise.
    """
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Apply :func:`plain_text` to a parser's description and option help, subcommands too."""
    if parser.description:
        parser.description = plain_text(parser.description)
    if parser.epilog:
        parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if isinstance(choice.help, str):
                    choice.help = plain_text(choice.help)
            for sub in dict.fromkeys(action.choices.values()):
                plain_help(sub)


__all__ = [
    "add_device_option",
    "add_events_option",
    "add_mask_variant_option",
    "add_match_uldct_flag",
    "add_threads_option",
    "apply_threads",
    "make_reporter",
    "plain_help",
    "plain_text",
]


def add_mask_variant_option(parser: argparse.ArgumentParser) -> None:
    """``--mask-variant``, shared by purify and build-dataset so their choices never drift."""
    from ipv2.purification.mask_options import VARIANTS

    parser.add_argument(
        "--mask-variant",
        choices=VARIANTS,
        default="paper",
        help="lung mask: paper (default), reference (the authors' script) or anatomical "
        "(lungs connected in 3D; no bowel gas, gas under the back or table; see docs/masks.md)",
    )
