"""``ipv2 bench TARGET``: benchmarks that print figures (never timed assertions).

Targets live in :mod:`ipv2.benchmarks`; each module there provides ``add_arguments`` and
``run``. A target listed here whose module has not landed yet exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ipv2.cli.common import add_events_option
from ipv2.events import Reporter

TARGETS: dict[str, tuple[str, str]] = {
    "simulate": ("projector + FBP against scikit-image radon/iradon", "#4"),
    "purify": ("masks + fusion per 512 x 512 slice", "#3"),
    "model": ("parameters, GFLOP and ms per forward for each network", "#5"),
    "preview": ("IPv2Denoise live mask preview per 512 x 512 slice", "#7"),
    "mixer": ("FFM's frequency mixer against a plain rewrite of its blocks", "#5"),
}


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="benchmarks that print timings")
    add_events_option(parser)
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (summary, issue) in TARGETS.items():
        module = _load(name)
        target = targets.add_parser(name, help=summary)
        if module is None:
            target.set_defaults(run=_not_built, bench_issue=issue, bench_name=name)
        else:
            module.add_arguments(target)
            target.set_defaults(run=module.run)


def _load(name: str) -> Any:
    try:
        return importlib.import_module(f"ipv2.benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"ipv2.benchmarks.{name}":
            return None
        raise


def _not_built(args: argparse.Namespace, reporter: Reporter) -> int:
    print(
        f"ipv2 bench {args.bench_name}: not built yet; it arrives with issue {args.bench_issue}",
        file=sys.stderr,
    )
    return 2
