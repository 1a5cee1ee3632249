"""``ipv2 denoise``: denoise a volume, a DICOM series or a folder of PNG slices."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ipv2.cli.common import (
    add_device_option,
    add_events_option,
    add_threads_option,
    apply_threads,
)
from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.events import Reporter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "denoise",
        help="denoise a volume with a trained model",
        description=(
            "Denoise every axial slice of an ultra-low-dose CT with a trained ipv2 model. "
            "The output keeps the input's geometry and scanner padding; a JSON sidecar "
            "records the model, steps, device and timing. The input is never modified, "
            "and nothing is written until the whole series is done."
        ),
    )
    p.add_argument(
        "--input",
        required=True,
        type=Path,
        help="volume file, DICOM folder or folder of PNG slices",
    )
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="model folder (model.safetensors + model.json), or the name of a model "
        "installed with ipv2 models install",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output volume (.nrrd, .nii, .nii.gz, .mha); for PNG input or --format dicom, "
        "a new folder",
    )
    p.add_argument(
        "--steps",
        default="auto",
        metavar="auto|K",
        help="sampler steps (network calls per slice): auto (default) takes the fewest steps "
        "whose validation RMSE, measured at the end of training for 1, 2, 4 and the "
        "configured steps, is within max(2%%, 1 HU) of the best; a model without that "
        "measurement uses its configured steps (said in one line); K uses K steps",
    )
    p.add_argument(
        "--allow-long",
        action="store_true",
        help="run more than 1000 sampler steps (refused otherwise, with a time estimate)",
    )
    p.add_argument("--batch-size", default="auto", help="slices per batch, or auto (default)")
    p.add_argument("--half", action="store_true", help="bf16/fp16 autocast on CUDA")
    p.add_argument(
        "--dtype", choices=("float32", "int16"), default="float32", help="output voxel type"
    )
    p.add_argument("--series", default=None, help="DICOM series UID when the folder holds several")
    p.add_argument(
        "--format",
        choices=("auto", "dicom"),
        default="auto",
        help="auto: as --out's suffix says (default); dicom: a derived DICOM series of the "
        "input series (same patient and study, new series; 16-bit with rescale, --dtype unused)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --format dicom: replace a DICOM series IPv2 wrote to --out before",
    )
    p.add_argument(
        "--png-window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="HU window of 8-bit PNG input (default -1024 1024)",
    )
    p.add_argument(
        "--change-map",
        action="store_true",
        help="also write OUT_difference (denoised - input, HU) and OUT_change_map (1 brighter, "
        "2 darker than the input beyond its local noise) beside the output, and print the "
        "share of changed voxels per region",
    )
    p.add_argument(
        "--change-masks",
        type=Path,
        default=None,
        help="label map (0 background, 1 body, 2 lung, e.g. from ipv2 purify) for the "
        "change-map summary (default: masks computed from the denoised output)",
    )
    p.add_argument(
        "--change-k",
        type=float,
        default=None,
        help="change-map threshold in noise SDs of the smoothed difference (default 5, "
        "measured on the phantom; lower flags more)",
    )
    add_device_option(p)
    add_threads_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ipv2.core.devices import parse_batch, resolve_device
    from ipv2.inference.denoise import (
        DenoiseOptions,
        check_denoise,
        denoise_volume,
        sampler_steps,
    )
    from ipv2.inference.steps_auto import parse_steps
    from ipv2.io.checkpoints import load_checkpoint
    from ipv2.io.model_store import find_model
    from ipv2.runtime.stop_requests import StopRequest

    apply_threads(args.threads)
    options = DenoiseOptions(
        steps=parse_steps(args.steps),
        device=args.device,
        batch_size=parse_batch(args.batch_size),
        half=args.half,
        allow_long=args.allow_long,
    )
    source = args.input.resolve()
    png_names = _png_names(source)
    dicom_source = _dicom_source(args, source, png_names)
    if dicom_source is None:
        _check_output(args.out, source, png_mode=bool(png_names))
    change_paths = _check_change_map(args, source)
    device = resolve_device(options.device)
    loaded = load_checkpoint(find_model(args.model), device=device)
    volume = _read_input(source, args, png_names)
    if dicom_source is not None:
        dicom_source.slice_order(volume)  # a grid mismatch fails before the denoising
    check_denoise(volume.array, loaded, options)  # absurd steps or sizes: refused first
    reporter.log(
        f"denoising {volume.depth} slices of {volume.shape[1]}x{volume.shape[2]} with "
        f"{loaded.meta.get('arch')} ({loaded.scheme.name}) on {device}"
    )
    reporter.log(f"sampler: {sampler_steps(loaded, options.steps).note}")
    t0 = time.perf_counter()
    with StopRequest() as stop:
        result, info = denoise_volume(
            volume,
            loaded,
            options,
            progress=lambda done, total: reporter.progress("denoise", done, total),
            cancel=lambda: stop.requested,
        )
    sidecar = {
        "input": str(source),
        "model": str(loaded.path),
        "arch": loaded.meta.get("arch"),
        "scheme": loaded.meta.get("scheme"),
        "window_hu": loaded.window.to_json(),
        "purification": loaded.meta.get("purification"),
        "engine_version": loaded.meta.get("engine_version"),
        **info.to_json(),
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    change = None
    if change_paths is not None:
        change = _change_map(args, volume=volume, result=result, paths=change_paths)
        sidecar["change_map"] = change[2]
    if dicom_source is not None:
        out = _write_dicom(result, dicom_source, args, sidecar=sidecar)
    else:
        out = _write_output(result, args, png_names, sidecar=sidecar)
    reporter.log(f"wrote {out} ({info.seconds / max(info.slices, 1):.3f} s per slice)")
    extra: dict[str, Any] = {}
    if change is not None:
        _report_change_map(change, result=result, paths=change_paths, reporter=reporter)
        extra["change_map"] = change[2]
    reporter.done(status="ok", out=str(out), **info.to_json(), **extra)
    return 0


def _check_change_map(args: argparse.Namespace, source: Path) -> Any:
    """The change map's file names, refused up front when taken; None without --change-map."""
    if not args.change_map:
        if args.change_masks is not None:
            raise InputError("--change-masks applies only with --change-map")
        return None
    from ipv2.cli.change_outputs import check_change_map_outputs

    _change_options(args).check()
    if args.change_masks is not None and not args.change_masks.is_file():
        raise InputError(f"--change-masks {args.change_masks} is not a file")
    return check_change_map_outputs(args.out, source)


def _change_options(args: argparse.Namespace) -> Any:
    from ipv2.metrics.change_map import ChangeMapOptions

    return ChangeMapOptions() if args.change_k is None else ChangeMapOptions(k=args.change_k)


def _change_map(args: argparse.Namespace, *, volume: Any, result: Any, paths: Any) -> Any:
    """The change map, its per-region figures and its sidecar entry (not yet written)."""
    from ipv2.cli.change_outputs import compute_change_map, summary_regions

    regions, region_source = summary_regions(args.change_masks, result)
    return compute_change_map(
        volume,
        result,
        paths,
        options=_change_options(args),
        regions=regions,
        region_source=region_source,
    )


def _report_change_map(change: Any, *, result: Any, paths: Any, reporter: Reporter) -> None:
    """Write the two volumes after the output, then one summary line and metric per region."""
    from ipv2.cli.change_outputs import write_change_map

    cmap, figures, _ = change
    write_change_map(cmap, result, paths)
    reporter.log(f"wrote {paths.difference} and {paths.labels}")
    for fig in figures:
        reporter.log(f"change map: {fig.line()}")
        reporter.metric(f"changed_beyond_noise_{fig.region}", fig.fraction, voxels=fig.voxels)


def _png_names(source: Path) -> list[str]:
    if not source.is_dir():
        return []
    pngs = sorted(p.name for p in source.glob("*.png"))
    return pngs if pngs and not any(source.glob("*.dcm")) else []


def _dicom_source(args: argparse.Namespace, source: Path, png_names: list[str]) -> Any:
    """For --format dicom, the input series' checked headers; read before any model loads."""
    if args.format != "dicom":
        if args.overwrite:
            raise InputError("--overwrite applies only to --format dicom output folders")
        return None
    from ipv2.io.dicom_series import check_output_folder
    from ipv2.io.dicom_source import read_source_series

    if png_names or not source.is_dir():
        raise InputError(
            "--format dicom needs a DICOM series folder as --input: the derived series "
            "keeps that series' patient, study and geometry"
        )
    check_output_folder(args.out, source_folder=source, overwrite=args.overwrite)
    return read_source_series(source, args.series)


def _write_dicom(
    result: Any, source: Any, args: argparse.Namespace, *, sidecar: dict[str, Any]
) -> Path:
    from ipv2.io.dicom_series import Derivation, write_derived_series

    derivation = Derivation(
        model=Path(sidecar["model"]).name, arch=str(sidecar["arch"]), steps=int(sidecar["steps"])
    )
    written = write_derived_series(
        result,
        source,
        args.out,
        derivation=derivation,
        overwrite=args.overwrite,
        sidecar={**sidecar, "source_series_instance_uid": source.uid},
    )
    return written.folder


def _check_output(out: Path, source: Path, png_mode: bool) -> None:
    from ipv2.io.atomic import check_new_output_dir
    from ipv2.io.volumes import volume_suffix

    if out.resolve() == source or source in out.resolve().parents:
        raise InputError(f"--out {out} would write into the input; choose a separate location")
    if png_mode:
        check_new_output_dir(out)
        return
    if volume_suffix(out) is None:
        raise InputError(
            f"--out {out}: give a volume file name ending in .nrrd, .nii, .nii.gz or .mha"
        )
    if out.exists():
        raise OutputExistsError(
            f"{out} already exists; choose another name so nothing is overwritten"
        )
    if out.with_name(_sidecar_name(out)).exists():
        raise OutputExistsError(f"{out.with_name(_sidecar_name(out))} already exists")
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist")


def _sidecar_name(out: Path) -> str:
    from ipv2.io.volumes import volume_suffix

    suffix = volume_suffix(out) or out.suffix
    return out.name[: -len(suffix)] + ".json"


def _read_input(source: Path, args: argparse.Namespace, png_names: list[str]) -> Any:
    from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
    from ipv2.core.padding import check_ct_range, detect_padding
    from ipv2.core.volume import Volume
    from ipv2.io.png_layout import read_png_slice
    from ipv2.io.volumes import read_volume

    if png_names:
        window = HUWindow(*args.png_window) if args.png_window else DEFAULT_PNG_WINDOW
        slices = [read_png_slice(source / name, window).array[0] for name in png_names]
        shapes = {s.shape for s in slices}
        if len(shapes) > 1:
            raise InputError(f"PNG slices in {source} have different sizes: {sorted(shapes)}")
        return Volume(np.stack(slices))
    volume = read_volume(source, args.series)
    check_ct_range(volume.array, detect_padding(volume.array).mask, what=str(source))
    return volume


def _write_output(
    result: Any, args: argparse.Namespace, png_names: list[str], *, sidecar: dict[str, Any]
) -> Path:
    from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
    from ipv2.io.atomic import atomic_output_dir, write_json_atomic
    from ipv2.io.png_layout import write_png_slice
    from ipv2.io.volumes import write_volume

    if png_names:
        window = HUWindow(*args.png_window) if args.png_window else DEFAULT_PNG_WINDOW
        with atomic_output_dir(args.out) as tmp:
            for k, name in enumerate(png_names):
                write_png_slice(result.array[k], tmp / name, window)
            write_json_atomic(tmp / "denoise.json", {**sidecar, "png_window_hu": window.to_json()})
        return Path(args.out)
    path = write_volume(result, args.out, dtype=args.dtype)
    write_json_atomic(
        path.with_name(_sidecar_name(path)), {**sidecar, "output": str(path), "dtype": args.dtype}
    )
    return path
