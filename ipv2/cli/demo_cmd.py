"""``ipv2 demo``: IPv1 versus IPv2 end to end on the built-in phantom."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipv2.cli.common import (
    add_device_option,
    add_events_option,
    add_threads_option,
    apply_threads,
)
from ipv2.core.events import Reporter


def register(sub: Any) -> None:
    from ipv2.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="the whole method end to end on the built-in phantom",
        description=(
            "Generate phantom patients, fit Module 2's simulation to their uLDCT, train the "
            "weak denoiser, build IPv1 and IPv2 datasets, train the same small FFM on each "
            "with the same budget, denoise the test patient and compare both against the "
            "noise-free truth. Writes report.html, report.png and metrics.json."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="new folder for the run")
    p.add_argument("--size", type=int, default=d.size, help=f"phantom pixels across ({d.size})")
    p.add_argument("--slices", type=int, default=d.slices, help=f"slices per patient ({d.slices})")
    p.add_argument("--cases", type=int, default=d.cases, help=f"phantom patients ({d.cases})")
    p.add_argument(
        "--steps", type=int, default=d.steps, help=f"training steps per model ({d.steps})"
    )
    p.add_argument(
        "--weak-steps", type=int, default=d.weak_steps, help=f"weak denoiser steps ({d.weak_steps})"
    )
    p.add_argument(
        "--sampler-steps",
        type=int,
        default=d.sampler_steps,
        help=f"Euler steps ({d.sampler_steps})",
    )
    p.add_argument("--base", type=int, default=d.base, help=f"FFM base channels ({d.base})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything (0)")
    p.add_argument(
        "--distill",
        action="store_true",
        help="also distill the IPv2-trained model into a one-step student (ipv2 distill, "
        "three times the teacher's training steps) and check its per-region RMSE against "
        "its teacher's",
    )
    add_threads_option(p)
    add_device_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ipv2.demo import DemoConfig, run_demo
    from ipv2.demo.report import percent

    threads = apply_threads(args.threads)
    config = DemoConfig(
        size=args.size,
        slices=args.slices,
        cases=args.cases,
        steps=args.steps,
        weak_steps=args.weak_steps,
        sampler_steps=args.sampler_steps,
        base=args.base,
        seed=args.seed,
        device=args.device,
        threads=threads,
        distill=args.distill,
    )
    metrics = run_demo(config, args.out, reporter)
    comp = metrics["comparison"]
    print(
        f"IPv2 vs IPv1 residual noise: background {percent(comp['background_noise_reduction_ipv2_vs_ipv1'])} lower, "
        f"lungs {percent(comp['lung_noise_reduction_ipv2_vs_ipv1'])} lower"
    )
    checks = comp.get("fidelity_checks") or []
    failed = [c for c in checks if not c.get("passed")]
    print(
        f"fidelity checks of the IPv2-trained model: {len(checks) - len(failed)} of "
        f"{len(checks)} pass" + "".join(f"\n  FAIL: {c['check']} ({c['measured']})" for c in failed)
    )
    student = comp.get("student_checks")
    if student is not None:
        missed = [c for c in student if not c.get("passed")]
        print(
            f"one-step student vs its teacher: {len(student) - len(missed)} of {len(student)} "
            "regions within 10% RMSE"
            + "".join(f"\n  FAIL: {c['check']} ({c['measured']})" for c in missed)
        )
    print(f"report: {args.out / 'report.html'} ({metrics['total_seconds']:.0f} s)")
    return 0
