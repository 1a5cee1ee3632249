"""``ipv2 build-dataset``: purified training and label sets for any ablation of the paper.

SOURCE is the authors' PNG layout (``<root>/{train,val,test}/{lq,gt}/*.png``, read
through an explicit HU window) or a CSV/JSON manifest of paired volumes (columns
``uldct``, ``ndct`` and optionally ``patient``, ``split``, ``case``, ``simulated``,
``weak``). The output folder follows docs/dataset-format.md. Module 2 simulates sim(N)
(``--match-uldct`` fits its dose per case); Module 3 needs a weak denoiser checkpoint
(``--weak-denoiser``) or precomputed ``weak`` columns, and without them it is skipped with
a note saying how to add it, while the other modules run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipv2.cli.common import (
    add_events_option,
    add_mask_variant_option,
    add_match_uldct_flag,
    add_threads_option,
    apply_threads,
)
from ipv2.core.events import Reporter
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.data.build import BuildConfig, build_dataset
from ipv2.data.format import DEFAULT_SPLIT_SEED
from ipv2.purification.masks import MaskOptions
from ipv2.purification.modules import parse_modules
from ipv2.purification.recipe import DEFAULT_T, Recipe
from ipv2.simulation.modulation import Modulation, add_modulation_option


def register(sub: Any) -> None:
    p = sub.add_parser(
        "build-dataset",
        help="build purified training and label sets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="PNG layout folder or CSV/JSON manifest of paired volumes")
    p.add_argument("--out", "-o", required=True, help="new output folder")
    p.add_argument("--strategy", choices=("ipv1", "ipv2"), default="ipv2")
    p.add_argument(
        "--modules",
        default=None,
        help="IPv2 modules, e.g. 1,2,3 or none (default: none for ipv1, 1,2,3 for ipv2)",
    )
    p.add_argument("--T", dest="t", type=float, default=DEFAULT_T, help="IPv1 texture mix (0..1)")
    add_mask_variant_option(p)
    p.add_argument(
        "--threshold-hu", type=float, default=None, help="fixed HU threshold instead of Otsu"
    )
    p.add_argument("--feather", type=float, default=0.0, help="soften the mask edge (pixels)")
    p.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed")
    p.add_argument(
        "--ratios", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument(
        "--resplit", action="store_true", help="ignore the source's splits; split by seed"
    )
    p.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=DEFAULT_PNG_WINDOW.to_json(),
        metavar=("LOW", "HIGH"),
        help="HU window of 8-bit PNG slices (default -1024 1024)",
    )
    p.add_argument("--pixel-mm", type=float, default=1.0, help="pixel size of PNG slices (mm)")
    p.add_argument(
        "--dose", type=float, default=0.02, help="dose fraction for Module 2's simulation"
    )
    add_match_uldct_flag(p)
    add_modulation_option(p)
    p.add_argument(
        "--weak-denoiser",
        "--weak",
        dest="weak_denoiser",
        type=Path,
        default=None,
        help="weak denoiser checkpoint folder (Module 3, Remove Noise; skipped without it)",
    )
    add_threads_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    apply_threads(args.threads)
    modules = None if args.modules is None else parse_modules(args.modules)
    masks = MaskOptions(variant=args.mask_variant, threshold_hu=args.threshold_hu)
    recipe = Recipe.for_strategy(
        args.strategy, modules, t=args.t, feather_px=args.feather, masks=masks
    )
    config = BuildConfig(
        recipe=recipe,
        seed=args.seed,
        ratios=(args.ratios[0], args.ratios[1], args.ratios[2]),
        resplit=args.resplit,
        window=HUWindow(args.window[0], args.window[1]),
        pixel_mm=args.pixel_mm,
        dose_fraction=args.dose,
        match_uldct=args.match_uldct,
        modulation=Modulation(strength=args.tube_current_modulation),
        weak_checkpoint=args.weak_denoiser,
    )
    manifest = build_dataset(args.source, args.out, config, reporter=reporter)
    counts = {s: sum(c["split"] == s for c in manifest["cases"]) for s in ("train", "val", "test")}
    reporter.log(
        f"built {len(manifest['cases'])} cases ({counts['train']}/{counts['val']}/{counts['test']} "
        f"train/val/test) with kinds {', '.join(manifest['kinds'])} into {args.out}"
    )
    return 0
