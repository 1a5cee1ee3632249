"""``ipv2 evaluate``: FID, KID, CLIP-FID against labels; PSNR, SSIM, noise against a truth.

--pred, --label and --truth each take a volume file, a folder of volume files (one case
per file, paired by name), a DICOM series folder, or a folder of 8-bit PNG slices (read
through --png-window). FID and KID use torch-fidelity's Inception-v3, CLIP-FID a CLIP
ViT-B/32 image encoder; both read weights from local files only (--inception-weights /
IPV2_INCEPTION_WEIGHTS, --clip-weights / IPV2_CLIP_WEIGHTS) and need the optional extra
``pip install 'ipv2[metrics]'``. Slices are windowed (--window), scaled to [0, 1] and
repeated to 3 channels; the report states each extractor's conventions. PSNR/SSIM are
measured inside the body and residual noise inside background and lungs, with masks
from --masks (ipv2 purify's label map: 0 background, 1 body, 2 lung) or computed from
the truth. Prints a table; --out writes JSON, --csv one row per case plus the 'all' row.

Without --metrics it computes what runs offline: PSNR, SSIM and noise when --truth is
given; FID and KID with --label when Inception weights are given (or the pixelstats
stand-in is asked for); CLIP-FID with --label when CLIP weights are given. The stand-in
has one feature space, so it refuses CLIP-FID (it would repeat FID). Sets too small for
FID or KID are computed but warned about.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

from ipv2.cli.common import (
    add_device_option,
    add_events_option,
    add_threads_option,
    apply_threads,
)
from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.io.atomic import atomic_text_file, write_json_atomic
from ipv2.io.output_guard import check_outputs_apart
from ipv2.metrics.distances import STANDARD_KID_SUBSET, STANDARD_KID_SUBSETS
from ipv2.metrics.evaluate import (
    EXTRACTOR_FOR,
    EvaluationOptions,
    EvaluationResult,
    clean_json,
    default_metrics,
    evaluate,
    parse_metrics,
)
from ipv2.metrics.features import FeatureExtractor, PixelStatsExtractor
from ipv2.metrics.imagesets import load_image_set, read_label_maps
from ipv2.metrics.reference import DEFAULT_ERODE_PX, REGIONS

TABLE_KEYS = (
    "slices",
    "fid",
    "kid_x100",
    "clipfid",
    "psnr",
    "ssim",
    "noise_background_hu",
    "noise_lung_hu",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="FID, KID, CLIP-FID and ground-truth metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred", required=True, help="denoised set (volume, folder, DICOM or PNGs)")
    p.add_argument("--label", help="label set for FID/KID/CLIP-FID (e.g. purified labels)")
    p.add_argument(
        "--truth", help="ground truth for PSNR/SSIM/noise (e.g. the phantom's clean volume)"
    )
    p.add_argument(
        "--masks", help="mask label map(s) from ipv2 purify (file or folder by case name)"
    )
    p.add_argument(
        "--metrics",
        default=None,
        help="comma list of fid,kid,clipfid,psnr,ssim,noise (default: psnr,ssim,noise with "
        "--truth; fid,kid and clipfid with --label when their weights are given)",
    )
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=DEFAULT_PNG_WINDOW.to_json(),
        help="HU window for features and PSNR/SSIM data range (default -1024 1024)",
    )
    p.add_argument(
        "--png-window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=DEFAULT_PNG_WINDOW.to_json(),
        help="HU window PNG slices were written with (default -1024 1024)",
    )
    p.add_argument("--inception-weights", help="Inception-v3 weights (or $IPV2_INCEPTION_WEIGHTS)")
    p.add_argument("--clip-weights", help="CLIP ViT-B/32 weights (or $IPV2_CLIP_WEIGHTS)")
    p.add_argument(
        "--feature-extractor",
        choices=("pretrained", "pixelstats"),
        default="pretrained",
        help="pixelstats = deterministic stand-in for smoke tests (FID and KID only); its "
        "FID/KID are NOT comparable to Inception values",
    )
    p.add_argument("--kid-subsets", type=int, default=STANDARD_KID_SUBSETS)
    p.add_argument(
        "--kid-subset-size",
        type=int,
        default=STANDARD_KID_SUBSET,
        help="shrinks to the smaller set's slice count when that is less",
    )
    p.add_argument("--erode", type=int, default=DEFAULT_ERODE_PX, help="noise-mask erosion (px)")
    p.add_argument("--unpaired", action="store_true", help="label set need not match case by case")
    p.add_argument("--seed", type=int, default=0, help="KID subset sampling seed")
    p.add_argument("--batch-size", type=int, default=32, help="slices per feature batch")
    p.add_argument("--out", help="JSON report file")
    p.add_argument("--csv", help="CSV file, one row per case plus the 'all' row")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing --out/--csv files (never an input, nor a folder)",
    )
    add_device_option(p)
    add_threads_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


_EXT = {"--out": ".json", "--csv": ".csv"}


def _check_output(path: str | None, overwrite: bool, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(
            f"{option} {p} is a folder; name a file (e.g. {p / ('report' + _EXT[option])}): "
            "a folder is never replaced, even with --overwrite"
        )
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists; choose another name or pass --overwrite")
    if not p.parent.is_dir():
        raise InputError(f"output folder {p.parent} does not exist")
    return p


def check_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """``--out`` and ``--csv`` checked before any work: never an input, never each other.

    Inputs are every path the command reads: the image sets, the masks and the weight
    files (from the options or their environment variables).
    """
    from ipv2.metrics.pretrained import CLIP_ENV, INCEPTION_ENV

    check_outputs_apart(
        outputs={"--out": args.out, "--csv": args.csv},
        inputs={
            "--pred": args.pred,
            "--label": args.label,
            "--truth": args.truth,
            "--masks": args.masks,
            "--inception-weights": args.inception_weights or os.environ.get(INCEPTION_ENV),
            "--clip-weights": args.clip_weights or os.environ.get(CLIP_ENV),
        },
    )
    return (
        _check_output(args.out, args.overwrite, "--out"),
        _check_output(args.csv, args.overwrite, "--csv"),
    )


def build_extractors(
    args: argparse.Namespace, metrics: tuple[str, ...], reporter: Reporter
) -> dict[str, FeatureExtractor]:
    """The extractors the metrics need; weights and packages are checked here, first."""
    needed = {EXTRACTOR_FOR[m] for m in metrics if m in EXTRACTOR_FOR}
    if not needed:
        return {}
    if args.feature_extractor == "pixelstats":
        reporter.log(
            "using the PixelStatsExtractor stand-in: FID/KID/CLIP-FID values are for smoke "
            "tests only and not comparable to Inception or CLIP results",
            level="warning",
        )
        return {key: PixelStatsExtractor(seed=args.seed) for key in needed}
    from ipv2.core.devices import resolve_device
    from ipv2.metrics.pretrained import ClipExtractor, InceptionExtractor

    device = str(resolve_device(args.device))
    out: dict[str, FeatureExtractor] = {}
    if "inception" in needed:
        out["inception"] = InceptionExtractor(args.inception_weights, device, args.batch_size)
    if "clip" in needed:
        out["clip"] = ClipExtractor(args.clip_weights, device, args.batch_size)
    return out


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(result: EvaluationResult) -> str:
    """Rows as aligned text: cases first, then the 'all' row."""
    rows = [*result.rows, result.summary]
    keys = [k for k in TABLE_KEYS if any(k in r for r in rows)]
    header = ["case", *keys]
    cells = [[_fmt(r.get("case"))] + [_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def format_region_table(row: dict[str, object]) -> str:
    """Bias, RMSE and noise SD (HU) per truth region for one row; '' when not measured."""
    if not any(f"rmse_{r}_hu" in row for r in REGIONS):
        return ""
    lines = [f"{'region':<12}{'bias_hu':>10}{'rmse_hu':>10}{'noise_hu':>10}"]
    for region in REGIONS:
        cells = [_fmt(row.get(f"{stat}_{region}_hu")) for stat in ("bias", "rmse", "noise")]
        lines.append(f"{region:<12}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


def write_csv(path: Path, result: EvaluationResult) -> None:
    """One row per case plus the 'all' row, written through a temporary file and a rename."""
    rows = [clean_json(r) for r in [*result.rows, result.summary]]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_text_file(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def choose_metrics(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str]]:
    """The metrics to compute and notes on those left out (see the module docstring)."""
    from ipv2.metrics.pretrained import CLIP_ENV, INCEPTION_ENV

    stand_in = args.feature_extractor == "pixelstats"
    notes: list[str] = []
    if args.metrics:
        metrics = parse_metrics(args.metrics)
    else:
        metrics, notes = default_metrics(
            truth=bool(args.truth),
            label=bool(args.label),
            inception=stand_in or bool(args.inception_weights or os.environ.get(INCEPTION_ENV)),
            clip=not stand_in and bool(args.clip_weights or os.environ.get(CLIP_ENV)),
        )
    if stand_in and "clipfid" in metrics:
        raise InputError(
            "clipfid with --feature-extractor pixelstats would reuse FID's stand-in features "
            "and repeat its value; drop clipfid, or use the pretrained extractors with "
            "--clip-weights FILE"
        )
    return metrics, notes


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    window = HUWindow(*args.window)
    png_window = HUWindow(*args.png_window)
    metrics, skipped = choose_metrics(args)
    apply_threads(args.threads)
    options = EvaluationOptions(
        metrics=metrics,
        window=window,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        erode_px=args.erode,
        seed=args.seed,
        unpaired=args.unpaired,
    )
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_json, out_csv = check_outputs(args)
    extractors = build_extractors(args, metrics, reporter)
    pred = load_image_set(args.pred, "prediction", png_window)
    label = load_image_set(args.label, "label", png_window) if args.label else None
    truth = load_image_set(args.truth, "truth", png_window) if args.truth else None
    masks = read_label_maps(args.masks) if args.masks else None
    for note in skipped:
        reporter.log(note)
    result = evaluate(
        pred, options, label, truth=truth, extractors=extractors, masks=masks, reporter=reporter
    )
    result.notes[:0] = skipped
    for warning in result.warnings:
        reporter.log(warning, level="warning")
    report = {
        "inputs": {
            "pred": args.pred,
            "label": args.label,
            "truth": args.truth,
            "masks": args.masks,
            "png_window_hu": png_window.to_json(),
        },
        "metrics": list(metrics),
        **result.to_json(),
    }
    if out_json is not None:
        write_json_atomic(out_json, report)
    if out_csv is not None:
        write_csv(out_csv, result)
    for key, value in clean_json(result.summary).items():
        if isinstance(value, float) and key not in ("case",):
            reporter.metric(key, value, case="all")
    if args.events == "human":
        print(format_table(result), flush=True)
        regions = format_region_table(result.summary)
        if regions:
            scope = "mean over cases" if len(result.rows) > 1 else "vs truth"
            print(f"per region ({scope}, HU; body excludes the lungs):\n{regions}", flush=True)
        if "kid_subset_size" in result.summary:
            print(
                f"KID: {result.summary['kid_subsets']} subsets of {result.summary['kid_subset_size']}"
                f" slices{' (shrunk: fewer than 1000 slices)' if result.summary.get('kid_subset_shrunk') else ''}",
                flush=True,
            )
        for name, conv in result.conventions.items():
            if isinstance(conv, dict):
                print(f"{name}: " + "; ".join(f"{k}: {v}" for k, v in conv.items()), flush=True)
    reporter.done(
        status="ok",
        summary=clean_json(result.summary),
        out=str(out_json) if out_json else None,
        csv=str(out_csv) if out_csv else None,
    )
    return 0
