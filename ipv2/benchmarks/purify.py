"""``ipv2 bench purify``: milliseconds per 512 x 512 slice for masks + fusion.

Two figures: one slice on its own (what the Slicer preview pays per slider move) and the
per-slice cost over a 64-slice volume (what purifying a dataset pays), with a break-down
into dark masks, background/lung masks and the two fusions. ``--backend scipy`` times
the reference binary operations instead of OpenCV's; ``IPV2_THREADS`` sets the threads.
The data is the phantom at 512 pixels; a few distinct slices are rendered and tiled to
the requested depth, with their noise rolled so no two slices are identical. A benchmark
prints, never asserts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ipv2.core.binary_ops import backend
from ipv2.core.events import Reporter
from ipv2.core.thread_pool import worker_count
from ipv2.purification.fusion import evaluation_label, training_input
from ipv2.purification.masks import MaskOptions, dark_mask, purification_masks
from ipv2.purification.modules import ALL_MODULES
from ipv2.purification.recipe import Recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels")
    parser.add_argument("--slices", type=int, default=64, help="volume depth")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs (the best is kept; a shared machine is noisy)",
    )
    parser.add_argument("--variant", choices=("paper", "reference"), default="paper")
    parser.add_argument(
        "--backend",
        choices=("auto", "opencv", "scipy"),
        default="auto",
        help="binary operations for the masks (auto: OpenCV when installed)",
    )


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def phantom_stack(size: int, slices: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """U and N stacks from the phantom: 4 rendered slices tiled, noise rolled per slice."""
    from ipv2.phantom import make_phantom

    case = make_phantom(size=size, slices=4, seed=0)
    reps = -(-slices // 4)
    u = np.tile(case.uldct.array, (reps, 1, 1))[:slices].copy()
    n = np.tile(case.ndct.array, (reps, 1, 1))[:slices].copy()
    noise = (u - np.tile(case.clean_ld.array, (reps, 1, 1))[:slices]).copy()
    for k in range(4, slices):  # distinct noise per slice
        u[k] += np.roll(noise[k], 7 * k, axis=1) - noise[k]
    return u, n


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    reporter.log(f"rendering phantom slices ({args.size} px)...")
    u, n = phantom_stack(args.size, args.slices)
    recipe = Recipe(strategy="ipv2", modules=ALL_MODULES, masks=MaskOptions(variant=args.variant))
    s, w = n, u  # stand-ins for sim(N) and weak(U): fusion cost does not depend on values
    ops = backend(args.backend).name

    def masks(uu: np.ndarray[Any, Any], nn: np.ndarray[Any, Any]) -> Any:
        return purification_masks(uu, nn, recipe.masks, mask_backend=ops)

    def full(uu: np.ndarray[Any, Any], nn: np.ndarray[Any, Any]) -> None:
        m = masks(uu, nn)
        training_input(recipe, m, uu, n=nn, s=s[: len(uu)])
        evaluation_label(recipe, m, uu, n=nn, w=w[: len(uu)])

    figures: dict[str, float] = {}
    figures["single_slice_ms"] = 1e3 * _best(lambda: full(u[:1], n[:1]), args.repeats * 5)
    total = _best(lambda: full(u, n), args.repeats)
    figures["volume_ms_per_slice"] = 1e3 * total / args.slices
    figures["dark_ms_per_slice"] = (
        1e3
        * _best(
            lambda: (dark_mask(u, mask_backend=ops), dark_mask(n, mask_backend=ops)), args.repeats
        )
        / args.slices
    )
    m = masks(u, n)
    figures["masks_ms_per_slice"] = 1e3 * _best(lambda: masks(u, n), args.repeats) / args.slices
    figures["fusion_ms_per_slice"] = (
        1e3
        * _best(
            lambda: (
                training_input(recipe, m, u, n=n, s=s),
                evaluation_label(recipe, m, u, n=n, w=w),
            ),
            args.repeats,
        )
        / args.slices
    )
    threads = worker_count()
    for name, value in figures.items():
        reporter.metric(
            name, round(value, 3), size=args.size, slices=args.slices, backend=ops, threads=threads
        )
    reporter.log(
        f"masks + fusion ({args.variant}, {ops}, {threads} thread{'s' if threads > 1 else ''}): "
        f"{figures['single_slice_ms']:.2f} ms for one {args.size}x{args.size} "
        f"slice, {figures['volume_ms_per_slice']:.2f} ms per slice over {args.slices} slices "
        f"(dark {figures['dark_ms_per_slice']:.2f}, all masks {figures['masks_ms_per_slice']:.2f}, "
        f"fusions {figures['fusion_ms_per_slice']:.2f})"
    )
    reporter.done(
        status="ok", backend=ops, threads=threads, **{k: round(v, 3) for k, v in figures.items()}
    )
    return 0
