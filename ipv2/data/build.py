"""Build a purified dataset from paired scans (``ipv2 build-dataset``).

Sources: the authors' PNG layout (``<root>/{train,val,test}/{lq,gt}``, whose split is
kept unless a re-split is asked for) or a CSV/JSON manifest of paired volumes with the
columns ``uldct``, ``ndct`` and optionally ``patient``, ``split``, ``case``,
``simulated`` and ``weak`` (precomputed ``S`` and ``W`` volumes; paths relative to the
manifest). Every case goes through :func:`ipv2.purification.pipeline.purify_pair` with one recipe; the
output is written into a temporary folder and renamed at the end, so a failure leaves
nothing behind. Module 2 runs the low-dose simulator (``ipv2.simulation``), optionally
fitted to each case's uLDCT; Module 3 applies a weak denoiser checkpoint. Without a weak
denoiser (or ``weak`` volumes for every case) Module 3 is skipped: the other modules run,
and one note, in the log and the manifest, says how to add it (such a dataset is also
what the weak denoiser trains on).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipv2 import __version__
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.core.json_files import read_json
from ipv2.core.padding import check_ct_range, detect_padding
from ipv2.core.volume import Volume
from ipv2.data.format import (
    DEFAULT_RATIOS,
    DEFAULT_SPLIT_SEED,
    FORMAT,
    FORMAT_VERSION,
    SPLITS,
    assign_splits,
)
from ipv2.io.atomic import atomic_output_dir, write_json_atomic
from ipv2.io.png_layout import PngPair, list_png_pairs, read_png_pair
from ipv2.io.volumes import read_volume
from ipv2.purification.pipeline import (
    Simulate,
    WeakDenoise,
    purify_pair,
    without_module_3_unless_weak,
)
from ipv2.purification.recipe import Recipe
from ipv2.simulation.modulation import Modulation

if TYPE_CHECKING:
    from ipv2.inference.weak_denoiser import WeakDenoiser
    from ipv2.simulation.simulator import Simulator


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
    # Per-slice dose following attenuation, as in `simulate` and `purify` (numpy only).
    modulation: Modulation = field(default_factory=Modulation)
    weak_checkpoint: Path | None = None

    def __post_init__(self) -> None:
        # Checked even when every case brings its own S: a bad dose is a bad argument,
        # refused before anything is read or created, with the simulation's own words.
        from ipv2.simulation.params import check_dose_fraction  # loads torch: not at import

        check_dose_fraction(self.dose_fraction)


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
                case,
                u,
                n,
                patient=row.get("patient") or None,
                split=split,
                simulated=path("simulated"),
                weak=path("weak"),
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
        data = read_json(src, what="a manifest of pairs (a list, or {'pairs': [...]})")
        if isinstance(data, dict):
            data = data.get("pairs")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{src}: expected a list of pairs or {{'pairs': [...]}}")
        return [{str(k): str(v) for k, v in r.items() if v is not None} for r in data]
    raise InputError(
        f"{src}: give a PNG layout folder (<root>/train/lq, <root>/train/gt, ...) or a .csv/.json "
        "manifest with columns uldct, ndct[, patient, split, case, simulated, weak]"
    )


def build_dataset(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: BuildConfig,
    *,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Build the dataset into ``out_dir`` (a new folder) and return its manifest."""
    rep = reporter or Reporter()
    pairs = discover_pairs(source)
    have_weak = config.weak_checkpoint is not None or all(p.weak for p in pairs)
    recipe, note = without_module_3_unless_weak(config.recipe, have_weak=have_weak)
    config = replace(config, recipe=recipe)
    warnings: list[str] = [note] if note is not None else []
    given = [p.split for p in pairs]
    if config.resplit or any(s is None for s in given):
        splits = assign_splits(
            [p.case for p in pairs], [p.patient for p in pairs], config.seed, ratios=config.ratios
        )
        split_rule = f"seeded split by {'patient' if any(p.patient for p in pairs) else 'pair'}"
    else:
        splits = [str(s) for s in given]
        split_rule = "as given by the source"
    # Imported here: the Slicer panel reads sources through this module (discover_pairs)
    # before torch is installed, and these two load torch.
    from ipv2.inference.weak_denoiser import load_weak_denoiser
    from ipv2.simulation.simulator import Simulator

    simulator: Simulator | None = None
    if recipe.needs_simulated and not all(p.simulated for p in pairs):
        simulator = Simulator.for_dose(
            config.dose_fraction, match_uldct=config.match_uldct, modulation=config.modulation
        )
    weak: WeakDenoiser | None = None
    if recipe.needs_weak and not all(p.weak for p in pairs) and config.weak_checkpoint is not None:
        weak = load_weak_denoiser(config.weak_checkpoint)
    for w in warnings:
        rep.log(w, level="warning")
    cases: list[dict[str, Any]] = []
    kinds_per_case: list[set[str]] = []
    with atomic_output_dir(out_dir) as tmp:
        for i, (pair, split) in enumerate(zip(pairs, splits, strict=True)):
            seeded = None if simulator is None else replace(simulator, seed=config.seed + i)
            entry, kinds = _build_case(pair, split, tmp, config, simulate=seeded, weak_denoise=weak)
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
                "simulation": simulator.description if simulator is not None else None,
                "dose_fraction": config.dose_fraction if recipe.needs_simulated else None,
                "match_uldct": config.match_uldct if recipe.needs_simulated else None,
                "tube_current_modulation": (
                    config.modulation.strength if recipe.needs_simulated else None
                ),
                "weak_denoiser": weak.description if weak is not None else None,
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


def _read_optional(path: Path | None) -> Volume | None:
    return read_volume(path) if path is not None else None


def _build_case(
    pair: SourcePair,
    split: str,
    root: Path,
    config: BuildConfig,
    *,
    simulate: Simulate | None,
    weak_denoise: WeakDenoise | None,
) -> tuple[dict[str, Any], set[str]]:
    u, n = _read_pair(pair, config)
    for name, vol in ((f"{pair.case}: U", u), (f"{pair.case}: N", n)):
        check_ct_range(vol.array, detect_padding(vol.array).mask, name)
    if diffs := u.grid_differences(n):
        raise InputError(f"case {pair.case}: U and N are not on the same grid: " + "; ".join(diffs))
    result = purify_pair(
        u,
        n,
        config.recipe,
        simulated=_read_optional(pair.simulated if config.recipe.needs_simulated else None),
        weak=_read_optional(pair.weak if config.recipe.needs_weak else None),
        simulate=simulate,
        weak_denoise=weak_denoise,
    )
    sources: dict[str, str] = {"uldct": str(pair.uldct), "ndct": str(pair.ndct)}
    if "S" in result.sources:
        seed = getattr(simulate, "seed", None)
        simulated_here = f"simulated from ndct (noise seed {seed})"
        sources["sim"] = str(pair.simulated) if result.sources["S"] == "given" else simulated_here
    if "W" in result.sources:
        applied = "weak denoiser applied to uldct"
        sources["weak"] = str(pair.weak) if result.sources["W"] == "given" else applied
    sim = result.simulated
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
