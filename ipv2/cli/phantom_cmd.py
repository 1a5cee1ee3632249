"""``ipv2 phantom``: write ground-truth chest phantom pairs (the built-in demo data)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipv2.cli.common import add_events_option, add_threads_option, apply_threads
from ipv2.core.events import Reporter
from ipv2.io.atomic import atomic_output_dir


def register(sub: Any) -> None:
    p = sub.add_parser(
        "phantom",
        help="write the ground-truth chest phantom pairs",
        description=(
            "Render paired phantom cases (NDCT at one breathing phase, uLDCT at another) "
            "with their noise-free truth, true masks and a lung-window preview. One folder "
            "per case: ndct/uldct/clean_ref/clean_ld.nrrd, labels_ref/labels_ld.nrrd "
            "(0 background, 1 body, 2 lung), preview.png, phantom.json."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="new folder to create")
    p.add_argument("--size", type=int, default=128, help="pixels across (default 128)")
    p.add_argument("--slices", type=int, default=16, help="slices per case (default 16)")
    p.add_argument("--cases", type=int, default=1, help="number of cases (patients), default 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--dose", type=float, default=0.02, help="uLDCT dose fraction (default 0.02)")
    p.add_argument(
        "--padding-value",
        type=float,
        default=None,
        help="fill outside the reconstruction circle with this HU, like a scanner (e.g. -3024)",
    )
    add_threads_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ipv2.core.errors import InputError
    from ipv2.phantom import make_phantom
    from ipv2.phantom.export import write_case
    from ipv2.simulation.params import check_dose_fraction

    if args.cases < 1:
        raise InputError(f"--cases must be at least 1, got {args.cases}")
    check_dose_fraction(args.dose)  # before the output folder exists
    apply_threads(args.threads)
    with atomic_output_dir(args.out) as tmp:
        for i in range(args.cases):
            reporter.progress("phantom cases", i, args.cases)
            case = make_phantom(
                size=args.size,
                slices=args.slices,
                seed=args.seed + i,
                uldct_dose=args.dose,
                padding_value=args.padding_value,
            )
            write_case(case, tmp / f"case{i:03d}")
        reporter.progress("phantom cases", args.cases, args.cases)
    reporter.log(f"wrote {args.cases} phantom case(s) to {args.out}")
    reporter.done(status="ok", out=str(args.out), cases=args.cases)
    return 0
