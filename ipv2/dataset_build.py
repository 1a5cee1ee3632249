"""Build a purified dataset from paired scans (``ipv2 build-dataset``).

Sources: the authors' PNG layout (``<root>/{train,val,test}/{lq,gt}``, whose split is
kept unless a re-split is asked for) or a CSV/JSON manifest of paired volumes with the
columns ``uldct``, ``ndct`` and optionally ``patient``, ``split``, ``case``,
``simulated`` and ``weak`` (precomputed ``S`` and ``W`` volumes; paths relative to the
manifest). Every case goes through :func:`ipv2.purify.purify_pair` with one recipe; the
output is written into a temporary folder and renamed at the end, so a failure leaves
nothing behind. Module 2 runs the low-dose simulator (``ipv2.lowdose``), optionally
fitted to each case's uLDCT; Module 3 applies a weak denoiser checkpoint. Without a weak
denoiser the labels are left out, the manifest says why, and everything else is built
(that is the first step of building with Module 3: the weak denoiser trains on it).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ipv2 import __version__
from ipv2.dataset import (
    DEFAULT_RATIOS,
    DEFAULT_SPLIT_SEED,
    FORMAT,
    FORMAT_VERSION,
    SPLITS,
    assign_splits,
)
from ipv2.errors import InputError
from ipv2.events import Reporter
from ipv2.intensity import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.outputs import atomic_output_dir, write_json_atomic
from ipv2.padding import check_ct_range, detect_padding
from ipv2.pngset import PngPair, list_png_pairs, read_png_pair
from ipv2.purify import Recipe, purify_pair
from ipv2.volume import Volume
from ipv2.volume_io import read_volume

VolumeFn = Callable[[Volume], Volume]
SimulateFn = Callable[[Volume, int, Volume], Volume]  # (N, seed, U) -> S


@dataclass(frozen=True)
class SourcePair:
    """One case to build: where U and N (and optionally S and W) come from."""

    case: str
    uldct: Path
    ndct: Path
    patient: str | None = None
    split: str | None = None
    simulated: Path | None = None
    weak: Path | None = None
    png: PngPair | None = None


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the content of a built dataset."""

    recipe: Recipe = field(default_factory=Recipe)
    seed: int = DEFAULT_SPLIT_SEED
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    resplit: bool = False  # ignore splits given by the source and split with the seed
    window: HUWindow = DEFAULT_PNG_WINDOW
    pixel_mm: float = 1.0  # PNG slices carry no pixel size
    dose_fraction: float = 0.02
    match_uldct: bool = False  # fit each case's simulated dose to its own real uLDCT noise
    weak_checkpoint: Path | None = None


def discover_pairs(source: str | os.PathLike[str]) -> list[SourcePair]:
    """The cases of a PNG layout folder or of a CSV/JSON manifest of paired volumes."""
    src = Path(source)
    if not src.exists():
        raise InputError(f"{src} does not exist; give a PNG layout folder or a CSV/JSON manifest")
    if src.is_dir():
        pngs = list_png_pairs(src)
        stems = [p.name for p in pngs]
        dup = {s for s in stems if stems.count(s) > 1}
        return [
            SourcePair(
                case=f"{p.split}_{p.name}" if p.name in dup else p.name,
                uldct=p.lq,
                ndct=p.gt,
                split=p.split,
                png=p,
            )
            for p in pngs
        ]
    rows = _manifest_rows(src)
    pairs: list[SourcePair] = []
    for i, row in enumerate(rows):
        if not row.get("uldct") or not row.get("ndct"):
            raise InputError(f"{src}: row {i + 1} needs both 'uldct' and 'ndct' paths")
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise InputError(f"{src}: row {i + 1} has split {split!r}; use one of {SPLITS}")

        def path(key: str, row: dict[str, str] = row) -> Path | None:
            v = row.get(key)
            return (src.parent / v) if v else None

        u, n = path("uldct"), path("ndct")
        assert u is not None and n is not None
        case = row.get("case") or _stem(u)
        pairs.append(
            SourcePair(
                case, u, n, row.get("patient") or None, split, path("simulated"), path("weak")
            )
        )
    names = [p.case for p in pairs]
    if len(set(names)) != len(names):
        repeated = sorted({c for c in names if names.count(c) > 1})
        raise InputError(f"{src}: case names must be unique; repeated: {', '.join(repeated[:5])}")
    if not pairs:
        raise InputError(f"{src} lists no pairs")
    return pairs


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _manifest_rows(src: Path) -> list[dict[str, str]]:
    suffix = src.suffix.lower()
    if suffix == ".csv":
        with src.open(newline="", encoding="utf-8") as fh:
            return [
                {k.strip(): (v or "").strip() for k, v in row.items() if k}
                for row in csv.DictReader(fh)
            ]
    if suffix == ".json":
        try:
            data = json.loads(src.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{src} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("pairs")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{src}: expected a list of pairs or {{'pairs': [...]}}")
        return [{str(k): str(v) for k, v in r.items() if v is not None} for r in data]
    raise InputError(
        f"{src}: give a PNG layout folder (<root>/train/lq, <root>/train/gt, ...) or a .csv/.json "
        "manifest with columns uldct, ndct[, patient, split, case, simulated, weak]"
    )


def find_simulator(
    dose_fraction: float, match_uldct: bool = False
) -> tuple[SimulateFn | None, str]:
    """Module 2's simulator as ``(N, seed, U) -> S``, with a note for the manifest.

    With ``match_uldct`` the dose of each case is fitted so the simulated noise in the
    lungs matches that case's real uLDCT (method.md section 4, calibration c): the lungs
    of IPv2's training input, the region ``S`` is pasted into, then carry the noise level
    the model will meet at test time.
    """
    from ipv2.lowdose import PhysicsParams, simulate_volume

    params = PhysicsParams(dose_fraction=dose_fraction)

    def run(volume: Volume, seed: int, uldct: Volume) -> Volume:
        target = uldct if match_uldct else None
        return simulate_volume(volume, params, seed=seed, match_uldct=target, region="lung")[0]

    how = "dose fitted per case to its uLDCT" if match_uldct else f"dose fraction {dose_fraction}"
    return run, f"ipv2.lowdose physical simulation ({how})"


def find_weak_denoiser(checkpoint: Path | None) -> tuple[VolumeFn | None, str]:
    """Module 3's weak denoiser as ``U -> W``, or None with the reason."""
    if checkpoint is None:
        return None, (
            "Module 3 needs a weak denoiser checkpoint (--weak CKPT; train one with "
            "ipv2 train --weak)"
        )
    from ipv2.checkpoint import load_checkpoint
    from ipv2.train.weak import weak_denoise

    loaded = load_checkpoint(checkpoint)

    def run(volume: Volume) -> Volume:
        return volume.with_array(weak_denoise(volume, loaded))

    return run, f"weak denoiser {checkpoint} ({loaded.meta.get('arch')}, {loaded.scheme.name})"


def build_dataset(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: BuildConfig,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Build the dataset into ``out_dir`` (a new folder) and return its manifest."""
    rep = reporter or Reporter()
    pairs = discover_pairs(source)
    recipe = config.recipe
    given = [p.split for p in pairs]
    if config.resplit or any(s is None for s in given):
        splits = assign_splits(
            [p.case for p in pairs], [p.patient for p in pairs], config.seed, config.ratios
        )
        split_rule = f"seeded split by {'patient' if any(p.patient for p in pairs) else 'pair'}"
    else:
        splits = [str(s) for s in given]
        split_rule = "as given by the source"
    sim_fn, sim_note = (None, "")
    if recipe.needs_simulated and not all(p.simulated for p in pairs):
        sim_fn, sim_note = find_simulator(config.dose_fraction, config.match_uldct)
    weak_fn, weak_note = (None, "")
    if recipe.needs_weak and not all(p.weak for p in pairs):
        weak_fn, weak_note = find_weak_denoiser(config.weak_checkpoint)
    warnings: list[str] = []
    if recipe.needs_simulated and sim_fn is None and sim_note:
        warnings.append(f"training inputs not built: Module 2 needs S = sim(N), but {sim_note}")
    if recipe.needs_weak and weak_fn is None and weak_note:
        warnings.append(f"evaluation labels not built: Module 3 needs W = weak(U), but {weak_note}")
    for w in warnings:
        rep.log(w, level="warning")
    cases: list[dict[str, Any]] = []
    kinds_per_case: list[set[str]] = []
    with atomic_output_dir(out_dir) as tmp:
        for i, (pair, split) in enumerate(zip(pairs, splits, strict=True)):
            entry, kinds = _build_case(pair, split, tmp, config, sim_fn, weak_fn, config.seed + i)
            cases.append(entry)
            kinds_per_case.append(kinds)
            rep.progress("build-dataset", i + 1, len(pairs))
        kinds_all = sorted(set.intersection(*kinds_per_case)) if kinds_per_case else []
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "engine_version": __version__,
            "source": str(Path(source).resolve()),
            "strategy": recipe.strategy,
            "modules": sorted(recipe.modules),
            "parameters": {
                **recipe.to_json(),
                "simulation": sim_note or None,
                "dose_fraction": config.dose_fraction if recipe.needs_simulated else None,
                "match_uldct": config.match_uldct if recipe.needs_simulated else None,
                "weak_denoiser": weak_note or None,
                "png_pixel_mm": config.pixel_mm if pairs[0].png is not None else None,
            },
            "window_hu": config.window.to_json(),
            "split": {"seed": config.seed, "ratios": list(config.ratios), "rule": split_rule},
            "kinds": kinds_all,
            "warnings": warnings,
            "cases": cases,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    rep.done(status="ok", out_dir=str(out_dir), cases=len(cases), kinds=kinds_all)
    return manifest


def _read_pair(pair: SourcePair, config: BuildConfig) -> tuple[Volume, Volume]:
    if pair.png is not None:
        return read_png_pair(pair.png, config.window, config.pixel_mm)
    return read_volume(pair.uldct), read_volume(pair.ndct)


def _build_case(
    pair: SourcePair,
    split: str,
    root: Path,
    config: BuildConfig,
    sim_fn: SimulateFn | None,
    weak_fn: VolumeFn | None,
    noise_seed: int,
) -> tuple[dict[str, Any], set[str]]:
    u, n = _read_pair(pair, config)
    for name, vol in ((f"{pair.case}: U", u), (f"{pair.case}: N", n)):
        check_ct_range(vol.array, detect_padding(vol.array).mask, name)
    if diffs := u.grid_differences(n):
        raise InputError(f"case {pair.case}: U and N are not on the same grid: " + "; ".join(diffs))
    recipe = config.recipe
    sim = weak = None
    sources: dict[str, str] = {"uldct": str(pair.uldct), "ndct": str(pair.ndct)}
    if recipe.needs_simulated:
        if pair.simulated is not None:
            sim = read_volume(pair.simulated)
            sources["sim"] = str(pair.simulated)
        elif sim_fn is not None:
            sim = sim_fn(n, noise_seed, u)
            sources["sim"] = f"simulated from ndct (noise seed {noise_seed})"
    if recipe.needs_weak:
        if pair.weak is not None:
            weak = read_volume(pair.weak)
            sources["weak"] = str(pair.weak)
        elif weak_fn is not None:
            weak = weak_fn(u)
            sources["weak"] = "weak denoiser applied to uldct"
    result = purify_pair(u, n, recipe, sim, weak)
    arrays: dict[str, np.ndarray[Any, Any]] = {"uldct": u.array, "ndct": n.array}
    arrays["lung"] = result.masks.lung.astype(np.float32)
    if sim is not None:
        arrays["sim"] = sim.array
    if result.training_input is not None:
        arrays["input"] = result.training_input.array
    if result.evaluation_label is not None:
        arrays["label"] = result.evaluation_label.array
    for kind, arr in arrays.items():
        folder = root / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        np.save(
            folder / f"{pair.case}.npy",
            np.ascontiguousarray(arr, dtype=np.float32),
            allow_pickle=False,
        )
    entry = {
        "case": pair.case,
        "split": split,
        "patient": pair.patient,
        "sources": sources,
        "kinds": sorted(arrays),
        "shape_zyx": list(u.shape),
        "spacing": list(u.spacing),
        "origin": list(u.origin),
        "direction": u.direction.ravel().tolist(),
        "lung_fraction": result.report["lung_fraction"],
        "background_fraction": result.report["background_fraction"],
        "threshold_hu": result.report["threshold_hu"],
        "warnings": result.report["warnings"],
    }
    return entry, set(arrays)
