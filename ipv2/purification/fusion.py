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

Which of these a recipe applies is :class:`ipv2.purification.recipe.Recipe`; sourcing S
and W and running it on a pair is :mod:`ipv2.purification.pipeline`.

Pixels that are scanner padding in ``U`` are copied from ``U`` into every output, so the
padding value stays what the scanner wrote.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.core.thread_pool import map_slices
from ipv2.purification.masks import MaskSet
from ipv2.purification.recipe import DEFAULT_T, Recipe

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Weight = npt.NDArray[np.bool_] | npt.NDArray[np.float32]


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
        map_slices(lambda k: _blend_into(out[k], aa[k], bb[k], w=w[k]), aa.shape[0])
    else:
        _blend_into(out, aa, bb, w=w)
    return out


def _blend_into(out: FloatArray, a: FloatArray, b: FloatArray, *, w: Weight) -> None:
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


def ipv1_input(
    u: npt.ArrayLike, n: npt.ArrayLike, m: Weight, *, t: float = DEFAULT_T
) -> FloatArray:
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


def region(recipe: Recipe, masks: MaskSet) -> Weight:
    """The blend weight: ``L`` with Module 1, else ``common(U, N)``; feathered if asked.

    With Module 1 the outline band (background in one image only) joins ``L`` unless the
    recipe asks for the paper's literal mask: see ``MaskSet.outline_band``.
    """
    if not recipe.removes_background:
        base = masks.common
    elif recipe.align_outline:
        base = masks.lung | masks.outline_band
    else:
        base = masks.lung
    return feather(base, recipe.feather_px)


def training_input(
    recipe: Recipe,
    masks: MaskSet,
    u: npt.ArrayLike,
    *,
    n: npt.ArrayLike,
    s: npt.ArrayLike | None = None,
    padding_u: BoolArray | None = None,
) -> FloatArray:
    """The training input for ``recipe``; Module 2 needs the simulated ``S``."""
    r = region(recipe, masks)
    if recipe.needs_simulated:
        if s is None:
            raise InputError("Module 2 needs the simulated low-dose image S = sim(N)")
        out = blend(u, s, r)
    else:
        out = ipv1_input(u, n, r, t=recipe.t)
    return _keep_padding(out, u, padding_u)


def evaluation_label(
    recipe: Recipe,
    masks: MaskSet,
    u: npt.ArrayLike,
    *,
    n: npt.ArrayLike,
    w: npt.ArrayLike | None = None,
    padding_u: BoolArray | None = None,
) -> FloatArray:
    """The evaluation label for ``recipe``; Module 3 needs the weakly denoised ``W``."""
    r = region(recipe, masks)
    if recipe.needs_weak:
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
