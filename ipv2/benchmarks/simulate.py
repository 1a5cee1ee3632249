"""``ipv2 bench simulate``: our projector + FBP against scikit-image radon + iradon.

Both run on the same chest-like slice with the same geometry (views over 180 degrees, a
detector covering the diagonal, i.e. scikit-image's ``circle=False``, Hann filter).
Ours is timed on a batch of slices after one warm-up batch (which builds the cached
gridding matrices; that one-off cost is printed separately); scikit-image is timed on
single slices, as it has no batching. The figures are seconds per slice and the ratio.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

from ipv2.core.devices import add_device_option, resolve_device
from ipv2.core.events import Reporter
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.phantoms import chest_slice
from ipv2.simulation.physics import simulate_slices
from ipv2.simulation.projector import ParallelGeometry, get_projector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels (default 512)")
    parser.add_argument(
        "--views", type=int, default=None, help="views over 180 degrees (default: size)"
    )
    parser.add_argument(
        "--batch", type=int, default=8, help="slices per batch for ours (default 8)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed batches for ours (default 3)")
    parser.add_argument(
        "--skimage-slices", type=int, default=1, help="slices timed for scikit-image (default 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    add_device_option(parser)


def _skimage_detector_count(size: int) -> int:
    """scikit-image pads to the diagonal when ``circle=False``; match its detector count."""
    diagonal = math.sqrt(2) * size
    pad = math.ceil(diagonal - size)
    return size + pad


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from skimage.transform import iradon, radon

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, allow_mps=False)
    size = int(args.size)
    views = int(args.views or size)
    image = chest_slice(size)
    mu = (0.0193 * 0.8 * (1.0 + image / 1000.0)).clip(min=0.0).astype(np.float32)
    batch = torch.from_numpy(np.repeat(mu[None], args.batch, axis=0))
    geometry = ParallelGeometry.for_image(size, size, views, n_det=_skimage_detector_count(size))

    t0 = time.perf_counter()
    projector = get_projector(geometry, device)
    x = batch.to(device)
    projector.fbp(projector.project(x), "hann")
    _sync(device)
    setup = time.perf_counter() - t0

    times = []
    for _ in range(max(1, args.repeats)):
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            projector.fbp(projector.project(x), "hann")
        _sync(device)
        times.append(time.perf_counter() - t0)
    ours = min(times) / args.batch

    hu = np.repeat(image[None], args.batch, axis=0)
    params = PhysicsParams(n_views=views, n_det=geometry.n_det)
    t0 = time.perf_counter()
    simulate_slices(hu, 0.8, params, device=str(device), batch_size=args.batch)
    _sync(device)
    physics = (time.perf_counter() - t0) / args.batch

    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    sk_times = []
    for _ in range(max(1, args.skimage_slices)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sino = radon(mu.astype(np.float64), theta=theta, circle=False)
            iradon(sino, theta=theta, circle=False, filter_name="hann", output_size=size)
        sk_times.append(time.perf_counter() - t0)
    skimage_s = float(np.median(sk_times))
    ratio = skimage_s / ours

    lines = [
        f"slice {size} x {size}, {views} views, {geometry.n_det} detector bins, device {device}, "
        f"torch threads {torch.get_num_threads()}",
        f"ours (projection + Hann FBP, batch {args.batch}): {ours:.4f} s per slice",
        f"ours one-off setup (gridding matrices, cached): {setup:.2f} s",
        f"ours full physical simulation (noise + log + FBP): {physics:.4f} s per slice",
        f"scikit-image radon + iradon: {skimage_s:.3f} s per slice",
        f"speed-up: {ratio:.1f}x",
    ]
    for line in lines:
        reporter.log(line)
    reporter.metric("ours_s_per_slice", ours, device=str(device))
    reporter.metric("skimage_s_per_slice", skimage_s)
    reporter.metric("speedup", ratio)
    reporter.done(status="ok", ours_s_per_slice=ours, skimage_s_per_slice=skimage_s, speedup=ratio)
    return 0
