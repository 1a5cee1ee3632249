"""``ipv2 bench preview``: the IPv2Denoise live mask preview on one 512 x 512 slice.

Times :func:`ipv2.slicer.workflows.preview_slice` end to end on a real MRML scene (the
``slicer-core`` wheel outside Slicer): slice read from the node's buffer, masks for
uLDCT and NDCT, and the segmentation update. Needs the ``test`` extra (slicer-core).
"""

from __future__ import annotations

import argparse
import statistics
import time

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=512, help="pixels across (default 512)")
    parser.add_argument("--repeats", type=int, default=20, help="timed previews (default 20)")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    try:
        import slicer
    except ImportError as exc:
        raise InputError("bench preview needs slicer-core: pip install -e '.[test]'") from exc
    from ipv2.phantom import make_phantom
    from ipv2.slicer import node_from_volume
    from ipv2.slicer.workflows import preview_slice

    case = make_phantom(size=args.size, slices=4, seed=0)
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    u = node_from_volume(case.uldct, "uLDCT", scene)
    n = node_from_volume(case.ndct, "NDCT", scene)
    seg = preview_slice(u, n, 1).segmentation  # warm-up, creates the segmentation
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        preview_slice(u, n, i % 4, segmentation=seg)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times) * 1000
    print(f"preview_slice {args.size}x{args.size} (uLDCT + NDCT masks -> segmentation):")
    print(
        f"  median {median:.1f} ms, min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {args.repeats}"
    )
    reporter.metric("preview_ms_median", median)
    return 0
