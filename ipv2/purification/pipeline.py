"""Purify one pair: masks, then S and W sourced, then the training input and the label.

This is the only place that decides where ``S = sim(N)`` (Module 2, Add Noise) and
``W = weak(U)`` (Module 3, Remove Noise) come from: a precomputed volume when the caller
has one, else the function it passes (the simulator of :mod:`ipv2.simulation`, the weak
denoiser of :mod:`ipv2.inference.weak_denoiser`), called only when the recipe and the
requested outputs need it. The CLI's ``purify``, ``build-dataset`` and both Slicer
workflows call :func:`purify_pair`; the functions arrive as arguments, so purification
imports neither the simulator nor any network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.padding import detect_padding
from ipv2.core.volume import Volume
from ipv2.purification.fusion import evaluation_label, training_input
from ipv2.purification.masks import MaskSet, purification_masks
from ipv2.purification.modules import Module
from ipv2.purification.recipe import Recipe

Simulate = Callable[[Volume, Volume], Volume]
"""``(N, U) -> S``: low-dose simulation of N on N's grid; U is there for dose matching."""

WeakDenoise = Callable[[Volume], Volume]
"""``U -> W``: the weak denoiser applied to every slice of U."""

MISSING_S = (
    "Module 2 (Add Noise) needs the simulated S = sim(N): give a simulated volume or let "
    "IPv2 simulate it"
)
MISSING_W = (
    "Module 3 (Remove Noise) needs W = weak(U): give a weak denoiser (train one with "
    "ipv2 train --weak-denoiser) or a precomputed W volume"
)

WEAK_DENOISER_COMMAND = (
    "ipv2 train --weak-denoiser --data DATASET --output WEAK, then pass --weak-denoiser WEAK/final"
)


def without_module_3_unless_weak(recipe: Recipe, *, have_weak: bool) -> tuple[Recipe, str | None]:
    """The recipe to run when Module 3 may lack its weak denoiser, and the note to print.

    Module 3 (Remove Noise) needs ``W = weak(U)``, and the weak denoiser is trained on a
    dataset built without it; a new user running the defaults has none yet. Rather than
    fail after minutes of simulation, ``purify`` and ``build-dataset`` both run the other
    modules (the label keeps U in the lungs: ``L*U + (1-L)*N``) and print one note that
    says how to add Module 3. With a weak denoiser (or W volumes) nothing changes.
    """
    if have_weak or not recipe.needs_weak:
        return recipe, None
    kept = frozenset(m for m in recipe.modules if m != Module.REMOVE_NOISE)
    running = ",".join(str(int(m)) for m in sorted(kept)) or "none"
    note = (
        f"Module 3 (Remove Noise) skipped: no weak denoiser was given, so modules {running} "
        f"run. To add it: {WEAK_DENOISER_COMMAND}"
    )
    return replace(recipe, modules=kept), note


@dataclass(frozen=True)
class PurifyResult:
    """Masks and fused volumes for one pair, all on U's grid, plus a JSON-ready report.

    ``simulated`` and ``weak`` are the S and W that were used (given or computed here), so
    a dataset can store them; ``sources`` says for each whether it was given or computed.
    """

    masks: MaskSet
    label_map: Volume
    training_input: Volume | None
    evaluation_label: Volume | None
    report: dict[str, object]
    simulated: Volume | None = None
    weak: Volume | None = None
    sources: dict[str, str] = field(default_factory=dict)


def purify_pair(
    u: Volume,
    n: Volume,
    recipe: Recipe,
    *,
    simulated: Volume | None = None,
    weak: Volume | None = None,
    simulate: Simulate | None = None,
    weak_denoise: WeakDenoise | None = None,
    build_input: bool = True,
    build_label: bool = True,
    require_all: bool = False,
) -> PurifyResult:
    """Masks, training input and evaluation label for one pair on the same grid.

    A given ``simulated``/``weak`` volume wins over the matching function. An output whose
    source is missing is left out with a warning in the report, so a caller can build
    everything else; with ``require_all`` the pair is refused instead, before any slow
    step runs. ``build_input=False`` or ``build_label=False`` skip an output and the work
    only it needs (the live preview asks for one).
    """
    _check_grid(u, n, "N")
    _check_grid(u, simulated, "S (simulated)")
    _check_grid(u, weak, "W (weakly denoised)")
    s_missing = build_input and recipe.needs_simulated and simulated is None and simulate is None
    w_missing = build_label and recipe.needs_weak and weak is None and weak_denoise is None
    if require_all and (s_missing or w_missing):
        raise InputError(MISSING_S if s_missing else MISSING_W)

    pad_u = detect_padding(u.array)
    pad_n = detect_padding(n.array)
    masks = purification_masks(
        u.array, n.array, recipe.masks, padding_u=pad_u.mask, padding_n=pad_n.mask, detect=False
    )
    warnings: list[str] = []
    sources: dict[str, str] = {}
    inp = lab = None
    if build_input and recipe.needs_simulated:
        simulated = _obtain(
            u, simulated, lambda: simulate and simulate(n, u), what="S", notes=sources
        )
    if build_label and recipe.needs_weak:
        weak = _obtain(u, weak, lambda: weak_denoise and weak_denoise(u), what="W", notes=sources)
    if build_input:
        if s_missing:
            warnings.append("training input not built: " + MISSING_S)
        else:
            s = simulated.array if simulated is not None and recipe.needs_simulated else None
            inp = u.with_array(
                training_input(recipe, masks, u.array, n=n.array, s=s, padding_u=pad_u.mask)
            )
    if build_label:
        if w_missing:
            warnings.append("evaluation label not built: " + MISSING_W)
        else:
            w = weak.array if weak is not None and recipe.needs_weak else None
            lab = u.with_array(
                evaluation_label(recipe, masks, u.array, n=n.array, w=w, padding_u=pad_u.mask)
            )
    warnings += _mask_warnings(recipe, masks)
    report: dict[str, object] = {
        "recipe": recipe.to_json(),
        "shape_zyx": list(u.shape),
        "spacing_xyz_mm": list(u.spacing),
        "threshold_hu": {
            "U": _finite(masks.u.dark.thresholds),
            "N": _finite(masks.n.dark.thresholds),
        },
        "padding": {"U": pad_u.summary(), "N": pad_n.summary()},
        "lung_fraction": masks.lung_fraction(),
        "background_fraction": masks.background_fraction(),
        # Where only one image shows background (the body outline moved): fused with L.
        "outline_band_fraction": (
            [float(v) for v in masks.outline_band.mean(axis=(1, 2))]
            if recipe.removes_background and recipe.align_outline
            else None
        ),
        "sources": dict(sources),
        "warnings": warnings,
    }
    label_map = Volume(
        masks.label_map().astype(np.float32), u.spacing, u.origin, direction=u.direction.copy()
    )
    used_s = simulated if recipe.needs_simulated else None
    used_w = weak if recipe.needs_weak else None
    return PurifyResult(
        masks,
        label_map,
        inp,
        evaluation_label=lab,
        report=report,
        simulated=used_s,
        weak=used_w,
        sources=sources,
    )


_MADE_HERE = {"S": "simulated from N", "W": "weak denoiser applied to U"}


def _obtain(
    u: Volume,
    given: Volume | None,
    make: Callable[[], Volume | None],
    *,
    what: str,
    notes: dict[str, str],
) -> Volume | None:
    """The given volume, else the one ``make`` computes (None without a function), noted."""
    if given is not None:
        notes[what] = "given"
        return given
    made = make()
    if made is not None:
        _check_grid(u, made, f"the computed {what}")
        notes[what] = _MADE_HERE[what]
    return made


def _check_grid(u: Volume, other: Volume | None, name: str) -> None:
    if other is not None and (diffs := u.grid_differences(other)):
        raise InputError(f"U and {name} are not on the same grid: " + "; ".join(diffs))


def _mask_warnings(recipe: Recipe, masks: MaskSet) -> list[str]:
    warnings = []
    no_lung = [k for k, f in enumerate(masks.lung_fraction()) if f == 0.0]
    if no_lung:
        warnings.append(f"no lung found on slices {no_lung} (expected near the apex and base)")
    if recipe.masks.variant == "reference":
        untouched = [k for k, f in enumerate(masks.background_fraction()) if f == 0.0]
        if untouched:
            warnings.append(
                f"reference variant removed no background on slices {untouched}: pixel (0, 0) "
                "is not dark there (table, arm or bright padding), so L includes outside air"
            )
    return warnings


def _finite(values: npt.NDArray[np.float64]) -> list[float | None]:
    """JSON has no infinity: a slice without a threshold is reported as null."""
    return [round(float(v), 2) if np.isfinite(v) else None for v in values]
