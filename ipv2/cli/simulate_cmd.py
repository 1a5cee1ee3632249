"""``ipv2 simulate``: an ultra-low-dose version of a normal-dose volume (IPv2 Module 2).

Volume in, volume out on the same grid, plus a JSON report beside the output
(``S.nrrd`` -> ``S.json``) with the dose, I0, mode, seed and the noise obtained. The dose
comes from ``--dose`` or ``--i0``, or is fitted with ``--match-noise`` (a target noise
std in HU) or ``--match-uldct`` (a real ultra-low-dose scan of the same patient).
The dose is the series' mean: by default each slice's photons follow the patient's
attenuation, as a scanner's tube-current modulation does (``--tube-current-modulation
off`` for one dose on every slice). An input that already looks low-dose gets a warning.
Nothing existing is overwritten: the command refuses before computing anything.
"""

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
from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.core.volume import Volume
from ipv2.io.atomic import write_json_atomic
from ipv2.io.volumes import read_volume, volume_suffix, write_volume
from ipv2.simulation.filters import FILTERS
from ipv2.simulation.modulation import Modulation, add_modulation_option
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.regions import REGIONS
from ipv2.simulation.volume_sim import MODES, simulate_volume

_DEFAULTS = PhysicsParams()


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate",
        help="simulate ultra-low-dose CT from normal-dose CT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ndct", required=True, help="normal-dose volume (NRRD, NIfTI, MHA or DICOM folder)"
    )
    parser.add_argument("--out", required=True, help="output volume (.nrrd, .nii, .nii.gz, .mha)")
    dose = parser.add_mutually_exclusive_group()
    dose.add_argument(
        "--dose",
        type=float,
        help=f"dose fraction of the full dose (default {_DEFAULTS.dose_fraction})",
    )
    dose.add_argument("--i0", type=float, help="incident photons per ray at the simulated dose")
    dose.add_argument(
        "--match-noise", type=float, metavar="HU", help="fit the dose to this noise std in --region"
    )
    dose.add_argument(
        "--match-uldct", metavar="U", help="fit the dose to this real ultra-low-dose volume's noise"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="physical",
        help="physical (default) or the authors' reference script",
    )
    parser.add_argument(
        "--region",
        choices=REGIONS,
        default="soft",
        help="where noise is matched (default soft tissue)",
    )
    parser.add_argument(
        "--roi", help="mask volume (nonzero = ROI) for --match-noise instead of --region"
    )
    parser.add_argument(
        "--filter", choices=FILTERS, default=_DEFAULTS.filter, help="FBP window (default hann)"
    )
    parser.add_argument(
        "--i0-full",
        type=float,
        default=_DEFAULTS.i0_full,
        help=f"photons per ray at full dose (default {_DEFAULTS.i0_full:g})",
    )
    parser.add_argument(
        "--mu-water",
        type=float,
        default=_DEFAULTS.mu_water,
        help=f"water attenuation per mm (default {_DEFAULTS.mu_water})",
    )
    parser.add_argument(
        "--electronic-noise",
        type=float,
        default=_DEFAULTS.electronic_noise_var,
        help="electronic noise variance, counts^2 (default 10)",
    )
    parser.add_argument(
        "--views",
        type=int,
        default=None,
        help="projection views over 180 degrees (default: pixels across)",
    )
    parser.add_argument(
        "--full-recon",
        action="store_true",
        help="output FBP(noisy sinogram) instead of input + reconstructed noise",
    )
    add_modulation_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch (default 8)")
    add_device_option(parser)
    add_threads_option(parser)
    add_events_option(parser)
    parser.set_defaults(run=run)


def report_path(out: Path) -> Path:
    """``S.nrrd`` -> ``S.json`` (``.nii.gz`` counts as one suffix)."""
    suffix = volume_suffix(out)
    stem = out.name[: -len(suffix)] if suffix else out.stem
    return out.with_name(stem + ".json")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    out = Path(args.out)
    if volume_suffix(out) is None:
        raise InputError(
            f"{out.name}: the output must be a volume file (.nrrd, .nii, .nii.gz or .mha)"
        )
    report_file = report_path(out)
    for target in (out, report_file):
        if target.exists():
            raise OutputExistsError(
                f"{target} already exists; choose another --out so nothing is overwritten"
            )
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    apply_threads(args.threads)

    params = PhysicsParams(
        dose_fraction=args.dose if args.dose is not None else _DEFAULTS.dose_fraction,
        i0_full=args.i0_full,
        i0=args.i0,
        mu_water=args.mu_water,
        electronic_noise_var=args.electronic_noise,
        filter=args.filter,
        n_views=args.views,
        keep_resolution=not args.full_recon,
    )
    ndct = read_volume(args.ndct)
    uldct = read_volume(args.match_uldct) if args.match_uldct else None
    roi = read_volume(args.roi).array if args.roi else None
    if roi is not None and args.match_noise is None:
        raise InputError("--roi only applies with --match-noise")
    reporter.log(
        f"simulating {ndct.shape} at {ndct.pixel_size_mm:.3f} mm pixels ({args.mode} mode)"
    )
    simulated, report = simulate_volume(
        ndct,
        params,
        mode=args.mode,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        reporter=reporter,
        match_noise_hu=args.match_noise,
        match_uldct=uldct,
        region=args.region,
        roi=roi,
        modulation=Modulation(strength=args.tube_current_modulation),
    )
    report["input"] = str(args.ndct)
    if args.match_uldct:
        report["uldct"] = str(args.match_uldct)
    report["output"] = str(out)
    _write_both(simulated, report, out=out, report_file=report_file)
    dose = report.get("dose_fraction")
    if dose is not None:
        reporter.log(
            f"wrote {out} (dose fraction {dose:.4g}, I0 {report['i0']:.4g}) and {report_file}"
        )
    else:
        reporter.log(f"wrote {out} and {report_file}")
    reporter.done(
        status="ok",
        output=str(out),
        report=str(report_file),
        dose_fraction=dose,
        i0=report.get("i0"),
    )
    return 0


def _write_both(simulated: Volume, report: dict[str, Any], *, out: Path, report_file: Path) -> None:
    """The volume and its report appear together or not at all.

    Each is written atomically; a failure or a stop (SIGTERM, Ctrl+C) between the two
    removes the volume again, so no output is left without the report that describes
    it. ``out`` did not exist when the command started (checked), so it is ours.
    """
    write_volume(simulated, out, "float32")
    try:
        write_json_atomic(report_file, report)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
