"""``ipv2 bench TARGET``: benchmarks that print figures (never timed assertions).

Targets live in :mod:`ipv2.benchmarks`; each module there provides ``add_arguments`` and
``run``. They are imported only when the parser is built, and each imports its heavy
dependencies inside ``run``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ipv2.cli.common import add_events_option

TARGETS: dict[str, str] = {
    "simulate": "projector + FBP against scikit-image radon/iradon",
    "purify": "masks + fusion per 512 x 512 slice",
    "model": "parameters, GFLOP and ms per forward for each network",
    "denoise": "a whole series through the denoising engine: time, memory, batch, steps",
    "mixer": "FFM's frequency mixer against a plain rewrite of its blocks",
    "preview": "IPv2Denoise live mask preview per 512 x 512 slice",
    "change-map": "how the change map's k and smoothing were chosen (phantom table)",
}


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="benchmarks that print timings")
    add_events_option(parser)
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, summary in TARGETS.items():
        module = importlib.import_module(f"ipv2.benchmarks.{name.replace('-', '_')}")
        target = targets.add_parser(name, help=summary)
        module.add_arguments(target)
        target.set_defaults(run=module.run)
