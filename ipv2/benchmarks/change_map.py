"""``ipv2 bench change-map``: how the change map's k and smoothing were chosen.

On the ground-truth phantom (uLDCT with a 5 mm soft-tissue nodule planted in one lung
slice), each setting of the smoothing sigma and k is judged twice: how much of the lung
a faithful denoiser gets flagged (an ideal one: truth plus 30% of the noise; a 3 x 3
median; a sigma-1 Gaussian), and how strongly a removed nodule stands out (the same
filters applied to the input without the nodule; the median of the nodule core's
smoothed difference in units of the smoothed noise SD). A good setting flags under 1% of
the lungs for every faithful filter and keeps the removed nodule well above k. The
defaults in :mod:`ipv2.metrics.change_map` come from this table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.core.events import Reporter

FloatArray = npt.NDArray[np.float32]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=128, help="phantom pixels across (128)")
    parser.add_argument("--slices", type=int, default=8, help="phantom slices (8)")
    parser.add_argument("--seeds", default="3,4,5", help="phantom seeds (3,4,5)")
    parser.add_argument("--sigmas", default="0.7,1,1.5,2", help="smoothing sigmas in px")
    parser.add_argument("--ks", default="3,4,5,6", help="thresholds k in noise SDs")


def _nodule(case: Any, diameter_mm: float = 5.0, hu: float = 40.0) -> tuple[FloatArray, Any, int]:
    """What to add to the volume for a nodule in the slice with the most lung, and its core."""
    from scipy import ndimage

    lung = case.masks_ld.lung
    k = int(np.argmax(lung.sum(axis=(1, 2))))
    inner = ndimage.binary_erosion(lung[k], iterations=4)
    ys, xs = np.nonzero(inner)
    cy, cx = ys[len(ys) // 3] + 0.5, xs[len(xs) // 3] + 0.5
    sub = 8  # sub-pixel sampling of the disc's coverage
    n = lung.shape[1]
    c = (np.arange(n * sub) + 0.5) / sub
    yy, xx = np.meshgrid(c, c, indexing="ij")
    radius_px = diameter_mm / 2 / float(case.params["pixel_mm"])
    cover = (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius_px**2).reshape(n, sub, n, sub)
    coverage = cover.mean(axis=(1, 3))
    add = np.zeros(lung.shape, np.float32)
    add[k] = coverage * (hu - case.clean_ld.array[k])
    return add, coverage >= 0.5, k


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from scipy import ndimage

    from ipv2.metrics.change_map import (
        ChangeMapOptions,
        change_map,
        regions_from_label_map,
        summarize,
    )
    from ipv2.phantom import make_phantom

    seeds = [int(s) for s in args.seeds.split(",")]
    sigmas = [float(s) for s in args.sigmas.split(",")]
    ks = [float(k) for k in args.ks.split(",")]
    filters: dict[str, Callable[[FloatArray], FloatArray]] = {
        "median3": lambda x: ndimage.median_filter(x, (1, 3, 3)),
        "gauss1": lambda x: ndimage.gaussian_filter(x, (0, 1.0, 1.0)),
    }
    reporter.log(
        "sigma k | lung % flagged for ideal / median3 / gauss1 (worst seed) | "
        "removed nodule: share of its core flagged (worst seed)"
    )
    cases = [make_phantom(size=args.size, slices=args.slices, seed=s) for s in seeds]
    planted = [_nodule(case) for case in cases]
    for sigma in sigmas:
        for k in ks:
            options = ChangeMapOptions(k=k, smooth_px=sigma)
            worst = {"ideal": 0.0, **{name: 0.0 for name in filters}}
            caught = 1.0
            for case, (add, core, z) in zip(cases, planted, strict=True):
                noisy = case.uldct.array + add
                noise = case.uldct.array - case.clean_ld.array
                regions = regions_from_label_map(case.masks_ld.label_map())
                outputs = {"ideal": case.clean_ld.array + add + 0.3 * noise}
                outputs.update({name: f(noisy) for name, f in filters.items()})
                for name, out in outputs.items():
                    shares = {
                        r.region: r.fraction
                        for r in summarize(change_map(noisy, out, options), regions)
                    }
                    worst[name] = max(worst[name], 100 * shares["lung"])
                removed = filters["median3"](case.uldct.array)  # the nodule never made it
                flags = change_map(noisy, removed, options).labels[z][core]
                caught = min(caught, float((flags > 0).mean()))
            lung = " / ".join(f"{worst[name]:.2f}" for name in worst)
            reporter.log(f"{sigma:<5g} {k:<3g} | {lung} | {caught:.2f}")
    return 0
