"""Fusions: IPv1 and IPv2 training inputs and evaluation labels (method.md 2, 4, 5, 6).

Every fusion is a pixelwise blend ``(1 - M) * A + M * B`` of two images on the same grid,
with ``M`` a 0/1 mask or a soft weight in [0, 1]. Written that way, ``M = 0`` returns
``A`` and ``M = 1`` returns ``B`` bit for bit, and the result is clipped to the
pixelwise range of ``A`` and ``B`` so float rounding can never step outside it.

The ablations of method.md section 6 are one recipe: the region ``R`` is ``common(U, N)``
(IPv1) or ``L`` (Module 1, background removed). Then

- training input: ``R*N + (1-R)*((1-T)*U + T*N)`` (IPv1), or ``R*S + (1-R)*U`` with
  Module 2, where ``S = sim(N)``; Module 2 replaces IPv1's texture mix, as in the
  paper's ``IPv2(U) = L*S + (1-L)*U``;
- evaluation label: ``R*U + (1-R)*N`` (IPv1), or ``R*W + (1-R)*N`` with Module 3, where
  ``W`` is the weak denoiser's output on ``U``.

Pixels that are scanner padding in ``U`` are copied from ``U`` into every output, so the
padding value stays what the scanner wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.errors import InputError
from ipv2.masks import MaskOptions, MaskSet, purification_masks
from ipv2.padding import detect_padding
from ipv2.parallel import map_slices
from ipv2.volume import Volume

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Weight = npt.NDArray[np.bool_] | npt.NDArray[np.float32]
Strategy = Literal["ipv1", "ipv2"]

STRATEGIES: tuple[str, ...] = ("ipv1", "ipv2")
ALL_MODULES = frozenset({1, 2, 3})
DEFAULT_T = 0.1


def blend(a: npt.ArrayLike, b: npt.ArrayLike, weight: npt.ArrayLike) -> FloatArray:
    """``(1 - w) * a + w * b`` in float32, exact at w = 0 and w = 1, never outside [a, b].

    A boolean weight selects pixels (no arithmetic at all); a float weight must lie in
    [0, 1]. Stacks are blended slice by slice on the thread pool.
    """
    aa = np.asarray(a, dtype=np.float32)
    bb = np.asarray(b, dtype=np.float32)
    w = np.asarray(weight)
    if aa.shape != bb.shape:
        raise InputError(f"cannot blend images of shapes {aa.shape} and {bb.shape}")
    if w.shape != aa.shape:
        if w.ndim == 0 or w.shape == aa.shape[-w.ndim :]:
            w = np.broadcast_to(w, aa.shape)
        else:
            raise InputError(f"blend weight shape {w.shape} does not match the images {aa.shape}")
    if w.dtype != np.bool_:
        w = w.astype(np.float32, copy=False)
        if not np.isfinite(w).all() or w.min(initial=0.0) < 0.0 or w.max(initial=0.0) > 1.0:
            raise InputError("blend weights must lie in [0, 1]")
    out = np.empty(aa.shape, dtype=np.float32)
    if aa.ndim == 3:
        map_slices(lambda k: _blend_into(out[k], aa[k], bb[k], w[k]), aa.shape[0])
    else:
        _blend_into(out, aa, bb, w)
    return out


def _blend_into(out: FloatArray, a: FloatArray, b: FloatArray, w: Weight) -> None:
    if w.dtype == np.bool_:
        np.copyto(out, a)
        np.copyto(out, b, where=w)
        return
    wf = w.astype(np.float32, copy=False)
    mixed = (np.float32(1.0) - wf) * a + wf * b
    np.clip(mixed, np.minimum(a, b), np.maximum(a, b), out=out)


def texture_mix(u: npt.ArrayLike, n: npt.ArrayLike, t: float) -> FloatArray:
    """``(1 - T) * U + T * N``: IPv1's outside-the-mask input; T = 0 gives U, T = 1 gives N."""
    if not 0.0 <= t <= 1.0:
        raise InputError(f"texture mix T must lie in [0, 1], got {t}")
    return blend(u, n, np.float32(t))


def ipv1_input(u: npt.ArrayLike, n: npt.ArrayLike, m: Weight, t: float = DEFAULT_T) -> FloatArray:
    """``IPv1(U) = M*N + (1-M)*((1-T)*U + T*N)``."""
    return blend(texture_mix(u, n, t), n, m)


def ipv1_label(u: npt.ArrayLike, n: npt.ArrayLike, m: Weight) -> FloatArray:
    """``IPv1(N) = M*U + (1-M)*N``."""
    return blend(n, u, m)


def ipv2_input(u: npt.ArrayLike, s: npt.ArrayLike, lung: Weight) -> FloatArray:
    """``IPv2(U) = L*S + (1-L)*U``: simulated lungs, everything else from the real U."""
    return blend(u, s, lung)


def ipv2_label(n: npt.ArrayLike, w: npt.ArrayLike, lung: Weight) -> FloatArray:
    """``IPv2(N) = L*W + (1-L)*N``: weakly denoised lungs, everything else from N."""
    return blend(n, w, lung)


def feather(mask: BoolArray, sigma_px: float) -> Weight:
    """A soft version of ``mask`` (in-plane Gaussian, per slice); 0 returns the mask itself.

    Off by default, as in the paper; a pixel or two softens the seam where simulated
    lung meets real chest wall.
    """
    if sigma_px < 0 or not np.isfinite(sigma_px):
        raise InputError(f"feathering sigma must be >= 0 pixels, got {sigma_px}")
    if sigma_px == 0:
        return mask
    m = np.asarray(mask, dtype=np.float32)
    sig = (0.0, sigma_px, sigma_px) if m.ndim == 3 else sigma_px
    return np.clip(ndimage.gaussian_filter(m, sig, mode="nearest"), 0.0, 1.0).astype(np.float32)


def parse_modules(text: str | None) -> frozenset[int]:
    """``"1,2,3"`` -> {1, 2, 3}; ``""``, ``"none"`` or ``"0"`` -> no module."""
    if text is None or text.strip().lower() in ("", "none", "0"):
        return frozenset()
    try:
        mods = frozenset(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError as exc:
        raise InputError(
            f"modules must be a comma-separated list of 1, 2, 3, got {text!r}"
        ) from exc
    if not mods <= ALL_MODULES:
        raise InputError(f"modules must be among 1, 2, 3, got {sorted(mods)}")
    return mods


@dataclass(frozen=True)
class Recipe:
    """One row of the ablation table: strategy, modules and their parameters."""

    strategy: Strategy = "ipv2"
    modules: frozenset[int] = field(default_factory=lambda: ALL_MODULES)
    t: float = DEFAULT_T
    feather_px: float = 0.0
    masks: MaskOptions = field(default_factory=MaskOptions)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        object.__setattr__(self, "modules", frozenset(int(m) for m in self.modules))
        if not self.modules <= ALL_MODULES:
            raise InputError(f"modules must be among 1, 2, 3, got {sorted(self.modules)}")
        if not 0.0 <= self.t <= 1.0:
            raise InputError(f"texture mix T must lie in [0, 1], got {self.t}")
        if self.feather_px < 0:
            raise InputError(f"feathering must be >= 0 pixels, got {self.feather_px}")

    @classmethod
    def for_strategy(
        cls, strategy: str, modules: frozenset[int] | None = None, **kw: object
    ) -> Recipe:
        """``ipv1`` defaults to no module, ``ipv2`` to all three; explicit modules win."""
        if modules is None:
            modules = ALL_MODULES if strategy == "ipv2" else frozenset()
        return cls(strategy=strategy, modules=modules, **kw)  # type: ignore[arg-type]

    @property
    def needs_simulated(self) -> bool:
        return 2 in self.modules

    @property
    def needs_weak(self) -> bool:
        return 3 in self.modules

    def describe(self) -> dict[str, str]:
        """The formulas this recipe applies, for reports and manifests."""
        r = "L" if 1 in self.modules else "M"
        inp = f"{r}*S + (1-{r})*U" if 2 in self.modules else f"{r}*N + (1-{r})*((1-T)*U + T*N)"
        lab = f"{r}*W + (1-{r})*N" if 3 in self.modules else f"{r}*U + (1-{r})*N"
        where = "L = lung mask (background removed)" if r == "L" else "M = common(U, N)"
        return {"input": inp, "label": lab, "region": where}

    def to_json(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "modules": sorted(self.modules),
            "T": self.t,
            "feather_px": self.feather_px,
            "masks": self.masks.to_json(),
            "formulas": self.describe(),
        }


def region(recipe: Recipe, masks: MaskSet) -> Weight:
    """The blend weight: ``L`` with Module 1, else ``common(U, N)``; feathered if asked."""
    base = masks.lung if 1 in recipe.modules else masks.common
    return feather(base, recipe.feather_px)


def training_input(
    recipe: Recipe,
    masks: MaskSet,
    u: npt.ArrayLike,
    n: npt.ArrayLike,
    s: npt.ArrayLike | None = None,
    padding_u: BoolArray | None = None,
) -> FloatArray:
    """The training input for ``recipe``; Module 2 needs the simulated ``S``."""
    r = region(recipe, masks)
    if 2 in recipe.modules:
        if s is None:
            raise InputError("Module 2 needs the simulated low-dose image S = sim(N)")
        out = blend(u, s, r)
    else:
        out = ipv1_input(u, n, r, recipe.t)
    return _keep_padding(out, u, padding_u)


def evaluation_label(
    recipe: Recipe,
    masks: MaskSet,
    u: npt.ArrayLike,
    n: npt.ArrayLike,
    w: npt.ArrayLike | None = None,
    padding_u: BoolArray | None = None,
) -> FloatArray:
    """The evaluation label for ``recipe``; Module 3 needs the weakly denoised ``W``."""
    r = region(recipe, masks)
    if 3 in recipe.modules:
        if w is None:
            raise InputError("Module 3 needs the weakly denoised image W = weak(U)")
        out = blend(n, w, r)
    else:
        out = ipv1_label(u, n, r)
    return _keep_padding(out, u, padding_u)


def _keep_padding(out: FloatArray, u: npt.ArrayLike, padding_u: BoolArray | None) -> FloatArray:
    if padding_u is None or not padding_u.any():
        return out
    uu = np.asarray(u, dtype=np.float32).reshape(out.shape)
    out = out.copy() if not out.flags.writeable else out
    out[padding_u.reshape(out.shape)] = uu[padding_u.reshape(out.shape)]
    return out


@dataclass(frozen=True)
class PurifyResult:
    """Masks and fused volumes for one pair, all on U's grid, plus a JSON-ready report."""

    masks: MaskSet
    label_map: Volume
    training_input: Volume | None
    evaluation_label: Volume | None
    report: dict[str, object]


def purify_pair(
    u: Volume,
    n: Volume,
    recipe: Recipe,
    simulated: Volume | None = None,
    weak: Volume | None = None,
) -> PurifyResult:
    """Masks, training input and evaluation label for one pair on the same grid.

    An output whose source is missing (``S`` for Module 2, ``W`` for Module 3) is left
    out with a warning in the report instead of failing the whole pair, so a caller can
    build everything else; callers that need it check for ``None``.
    """
    for name, other in (("N", n), ("S (simulated)", simulated), ("W (weakly denoised)", weak)):
        if other is not None and (diffs := u.grid_differences(other)):
            raise InputError(f"U and {name} are not on the same grid: " + "; ".join(diffs))
    pad_u = detect_padding(u.array)
    pad_n = detect_padding(n.array)
    masks = purification_masks(u.array, n.array, recipe.masks, pad_u.mask, pad_n.mask, detect=False)
    warnings: list[str] = []
    inp = lab = None
    if recipe.needs_simulated and simulated is None:
        warnings.append("training input not built: Module 2 needs the simulated S = sim(N)")
    else:
        s = simulated.array if simulated is not None else None
        inp = u.with_array(training_input(recipe, masks, u.array, n.array, s, pad_u.mask))
    if recipe.needs_weak and weak is None:
        warnings.append("evaluation label not built: Module 3 needs the weakly denoised W")
    else:
        w = weak.array if weak is not None else None
        lab = u.with_array(evaluation_label(recipe, masks, u.array, n.array, w, pad_u.mask))
    lung_f = masks.lung_fraction()
    no_lung = [k for k, f in enumerate(lung_f) if f == 0.0]
    if no_lung:
        warnings.append(f"no lung found on slices {no_lung} (expected near the apex and base)")
    if recipe.masks.variant == "reference":
        untouched = [k for k, f in enumerate(masks.background_fraction()) if f == 0.0]
        if untouched:
            warnings.append(
                f"reference variant removed no background on slices {untouched}: pixel (0, 0) "
                "is not dark there (table, arm or bright padding), so L includes outside air"
            )
    report: dict[str, object] = {
        "recipe": recipe.to_json(),
        "shape_zyx": list(u.shape),
        "spacing_xyz_mm": list(u.spacing),
        "threshold_hu": {
            "U": _finite(masks.u.dark.thresholds),
            "N": _finite(masks.n.dark.thresholds),
        },
        "padding": {"U": pad_u.summary(), "N": pad_n.summary()},
        "lung_fraction": lung_f,
        "background_fraction": masks.background_fraction(),
        "warnings": warnings,
    }
    label_map = Volume(
        masks.label_map().astype(np.float32), u.spacing, u.origin, u.direction.copy()
    )
    return PurifyResult(masks, label_map, inp, lab, report)


def _finite(values: npt.NDArray[np.float64]) -> list[float | None]:
    """JSON has no infinity: a slice without a threshold is reported as null."""
    return [round(float(v), 2) if np.isfinite(v) else None for v in values]
