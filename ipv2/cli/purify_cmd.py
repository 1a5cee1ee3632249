"""``ipv2 purify``: masks, training input and evaluation label for one pair of volumes.

Writes into a new folder, atomically: ``masks.<ext>`` (uint8 label map: 0 background,
1 body, 2 lung), ``train_input.<ext>`` and ``eval_label.<ext>`` (float32 HU, on U's
grid), ``simulated.<ext>`` and ``weak.<ext>`` when S and W were computed here (for
QA), and ``report.json`` (parameters, per-slice lung and background fractions,
thresholds, warnings). U and N on different grids are refused with what differs, unless
``--resample`` asks for N (and S, W) to be resampled onto U. Without a weak denoiser,
Module 3 is skipped with a note saying how to add it (the other modules run).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from ipv2.cli.common import (
    add_events_option,
    add_mask_variant_option,
    add_match_uldct_flag,
    add_threads_option,
    apply_threads,
)
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.padding import check_ct_range, detect_padding
from ipv2.core.volume import Volume
from ipv2.io.atomic import atomic_output_dir, write_json_atomic
from ipv2.io.volumes import VOLUME_SUFFIXES, read_volume, to_sitk, write_volume
from ipv2.purification.masks import MaskOptions
from ipv2.purification.modules import parse_modules
from ipv2.purification.pipeline import purify_pair, without_module_3_unless_weak
from ipv2.purification.recipe import DEFAULT_T, Recipe
from ipv2.simulation.modulation import Modulation, add_modulation_option
from ipv2.simulation.noise_estimate import low_dose_warning
from ipv2.simulation.params import check_dose_fraction
from ipv2.simulation.simulator import Simulator

if TYPE_CHECKING:  # the module loads torch; commands that fail early skip it
    from ipv2.inference.weak_denoiser import WeakDenoiser


def register(sub: Any) -> None:
    p = sub.add_parser(
        "purify",
        help="purification masks, training inputs and labels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--uldct", "-U", required=True, help="real ultra-low-dose volume U")
    p.add_argument("--ndct", "-N", required=True, help="normal-dose volume N of the same patient")
    p.add_argument("--strategy", choices=("ipv1", "ipv2"), default="ipv2")
    p.add_argument(
        "--modules",
        default=None,
        help="IPv2 modules to apply, e.g. 1,2,3 or none (default: none for ipv1, 1,2,3 for ipv2)",
    )
    p.add_argument("--simulated", "-S", help="simulated low-dose S = sim(N) (Module 2)")
    p.add_argument(
        "--weak-denoiser",
        "--weak",
        "-W",
        dest="weak",
        help="Module 3: a weak denoiser checkpoint folder (applied to U; W is saved as "
        "weak.<ext>), or a W = weak(U) volume; without it Module 3 is skipped",
    )
    add_mask_variant_option(p)
    p.add_argument("--T", dest="t", type=float, default=DEFAULT_T, help="IPv1 texture mix (0..1)")
    p.add_argument(
        "--threshold-hu", type=float, default=None, help="fixed HU threshold instead of Otsu"
    )
    p.add_argument(
        "--opening-radius", type=int, default=1, help="disk radius of the opening (pixels)"
    )
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    p.add_argument(
        "--background-rule",
        choices=("outside-body", "corners"),
        default="outside-body",
        help="corners = only the paper's four-corner fill; outside-body also removes enclosed air outside the body",
    )
    p.add_argument(
        "--feather", type=float, default=0.0, help="soften the mask edge (Gaussian sigma, pixels)"
    )
    p.add_argument(
        "--dose", type=float, default=0.02, help="dose fraction when S is simulated here"
    )
    add_match_uldct_flag(p)
    add_modulation_option(p)
    p.add_argument("--resample", action="store_true", help="resample N (and S, W) onto U's grid")
    p.add_argument(
        "--only",
        choices=("input", "label"),
        default=None,
        help="build only the training input or only the evaluation label, and only the "
        "work it needs (a one-slice preview asks for one); default: both",
    )
    p.add_argument("--format", choices=[s.lstrip(".") for s in VOLUME_SUFFIXES], default="nrrd")
    p.add_argument("--out-dir", "-o", required=True, help="new output folder")
    add_threads_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def resample_onto(moving: Volume, reference: Volume) -> Volume:
    """Linear resampling of ``moving`` onto ``reference``'s grid (SimpleITK, identity transform)."""
    out = sitk.Resample(
        to_sitk(moving),
        to_sitk(reference),
        sitk.Transform(),
        sitk.sitkLinear,
        float(moving.array.min()),
        sitk.sitkFloat32,
    )
    return reference.with_array(sitk.GetArrayFromImage(out))


def _load(
    path: str, what: str, u: Volume | None, *, resample: bool, log: list[str] | None = None
) -> Volume:
    vol = read_volume(path)
    check_ct_range(vol.array, detect_padding(vol.array).mask, f"{what} ({path})")
    if u is not None and (diffs := u.grid_differences(vol)):
        if not resample:
            raise InputError(
                f"U and {what} are not on the same grid: {'; '.join(diffs)}. Give matching volumes, "
                "or pass --resample to resample it onto U"
            )
        vol = resample_onto(vol, u)
        if log is not None:
            log.append(f"{what} resampled onto U ({'; '.join(diffs)})")
    return vol


def _reporting_sources(
    simulator: Simulator | None, weak_denoiser: WeakDenoiser | None, reporter: Reporter
) -> dict[str, Any]:
    """The slow sources with per-slice progress events (a panel shows them for a volume)."""
    sources: dict[str, Any] = {"simulate": None, "weak_denoise": None}
    if simulator is not None:
        sources["simulate"] = lambda n, u: simulator(n, u, reporter=reporter)
    if weak_denoiser is not None:
        sources["weak_denoise"] = lambda u: weak_denoiser(
            u, lambda done, total: reporter.progress("weak", done, total)
        )
    return sources


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    check_dose_fraction(args.dose)  # before any volume is read
    apply_threads(args.threads)
    masks = MaskOptions(
        variant=args.mask_variant,
        threshold_hu=args.threshold_hu,
        opening_radius=args.opening_radius,
        connectivity=args.connectivity,
        background_rule=args.background_rule,
    )
    modules = None if args.modules is None else parse_modules(args.modules)
    recipe = Recipe.for_strategy(
        args.strategy, modules, t=args.t, feather_px=args.feather, masks=masks
    )
    recipe, note = without_module_3_unless_weak(recipe, have_weak=bool(args.weak))
    if note is not None:
        reporter.log(note, level="warning")
    u = _load(args.uldct, "U", None, resample=False)
    resampled: list[str] = []
    n = _load(args.ndct, "N", u, resample=args.resample, log=resampled)
    sim = (
        _load(args.simulated, "S", u, resample=args.resample, log=resampled)
        if args.simulated
        else None
    )
    weak = weak_denoiser = None
    if args.weak and (Path(args.weak) / "model.json").is_file():
        # Imported here: it loads torch, which commands that only parse or fail early skip.
        from ipv2.inference.weak_denoiser import load_weak_denoiser

        weak_denoiser = load_weak_denoiser(args.weak)
    elif args.weak:
        weak = _load(args.weak, "W", u, resample=args.resample, log=resampled)
    simulator = (
        None
        if sim is not None
        else Simulator.for_dose(
            args.dose,
            match_uldct=args.match_uldct,
            modulation=Modulation(strength=args.tube_current_modulation),
        )
    )
    if recipe.needs_simulated and simulator is not None and args.only != "label":
        _, low_dose = low_dose_warning(n.array)  # as simulate warns: S from a low-dose N
        if low_dose is not None:
            reporter.log(low_dose, level="warning")
        reporter.log(f"simulating S from N with {simulator.description}")
    if recipe.needs_weak and weak_denoiser is not None and args.only != "input":
        reporter.log(f"weakly denoising U with {weak_denoiser.description}")
    reporter.progress("purify", 0, 1)
    result = purify_pair(
        u,
        n,
        recipe,
        simulated=sim,
        weak=weak,
        **_reporting_sources(simulator, weak_denoiser, reporter),
        build_input=args.only != "label",
        build_label=args.only != "input",
        require_all=True,
    )
    sim_note = "given" if sim is not None else None
    if result.sources.get("S") == "simulated from N" and simulator is not None:
        sim_note = simulator.description
    ext = "." + args.format
    report: dict[str, Any] = {
        "inputs": {
            "uldct": args.uldct,
            "ndct": args.ndct,
            "simulated": args.simulated or sim_note,
            "weak": args.weak,
            "match_uldct": bool(args.match_uldct),
        },
        "resampled": resampled,
        "notes": [note] if note is not None else [],
        **result.report,
        "outputs": {},
    }
    with atomic_output_dir(args.out_dir) as tmp:
        outputs: dict[str, str] = {}
        write_volume(result.label_map, tmp / f"masks{ext}", dtype="uint8")
        outputs["masks"] = f"masks{ext}"
        if result.training_input is not None:
            write_volume(result.training_input, tmp / f"train_input{ext}")
            outputs["training_input"] = f"train_input{ext}"
        if result.evaluation_label is not None:
            write_volume(result.evaluation_label, tmp / f"eval_label{ext}")
            outputs["evaluation_label"] = f"eval_label{ext}"
        if result.simulated is not None and args.simulated is None:
            write_volume(result.simulated, tmp / f"simulated{ext}")
            outputs["simulated"] = f"simulated{ext}"
        if result.weak is not None and result.sources.get("W") != "given":
            write_volume(result.weak, tmp / f"weak{ext}")  # W = weak(U), for QA
            outputs["weak"] = f"weak{ext}"
        report["outputs"] = outputs
        write_json_atomic(tmp / "report.json", report)
    reporter.progress("purify", 1, 1)
    for w in result.report["warnings"]:  # type: ignore[attr-defined]
        reporter.log(str(w), level="warning")
    out_dir = Path(args.out_dir)
    for name in [*report["outputs"].values(), "report.json"]:
        reporter.log(f"wrote {out_dir / name}")
    lung = float(np.mean(result.masks.lung))
    reporter.metric("lung_fraction", lung)
    reporter.done(status="ok", out_dir=str(out_dir), outputs=report["outputs"])
    return 0
