"""Ground-truth metrics: PSNR, SSIM and residual noise against a known truth.

Real paired scans have no truth, but the phantom does, and there the paper's claim can
be checked directly: IPv2 should leave far less noise than IPv1 in the background and in
the lungs. Residual noise is the standard deviation of ``prediction - truth`` inside a
region, in HU: the truth's own structure cancels, a constant offset does not count as
noise, and the regions are eroded by a few pixels so blurred edges are not taken for
noise. Bias (mean of ``prediction - truth``) and RMSE per region (background, body
without the lungs, lung) show what noise alone hides: a region made darker or worse
than the input. PSNR and SSIM are computed inside the body (lungs included) on images clipped to
the HU window, with the window width as data range, so they compare across runs only
for the same window (the report states it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.metrics import structural_similarity

from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow
from ipv2.core.padding import detect_padding

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]

DEFAULT_ERODE_PX = 2
MIN_REGION_PIXELS = 20  # fewer pixels than this give no meaningful standard deviation
SSIM_WINDOW = 7  # scikit-image's default uniform 7 x 7 window
PADDING_BELOW_HU = -1010.0
# Regions of the per-region figures, in report order; "body" excludes the lungs.
REGIONS = ("background", "body", "lung")
REGION_KEYS = tuple(f"{s}_{r}_hu" for r in REGIONS for s in ("bias", "rmse", "noise"))


def _stack(array: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"{what} must be a 2D slice or a 3D volume, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} holds NaN or infinite values")
    return arr


def _mask(mask: npt.ArrayLike, shape: tuple[int, ...], what: str) -> BoolArray:
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 2:
        m = m[np.newaxis]
    if m.shape != shape:
        raise InputError(f"{what} mask has shape {m.shape}, the images {shape}")
    return m


@dataclass(frozen=True)
class RegionMasks:
    """Body (lungs included), lung and background regions on the truth's grid (z, y, x)."""

    body: BoolArray
    lung: BoolArray
    background: BoolArray
    source: str

    @classmethod
    def from_label_map(cls, labels: npt.ArrayLike, source: str = "label map") -> RegionMasks:
        """``ipv2 purify``'s convention: 0 background (and table), 1 body, 2 lung."""
        lab = np.rint(np.asarray(labels, dtype=np.float32)).astype(np.int16)
        if lab.ndim == 2:
            lab = lab[np.newaxis]
        found = set(np.unique(lab).tolist())
        if not found <= {0, 1, 2}:
            raise InputError(
                f"{source}: a mask label map holds 0 (background), 1 (body) and 2 (lung), "
                f"found values {sorted(found)[:8]}; give the masks file written by ipv2 purify"
            )
        return cls(body=lab >= 1, lung=lab == 2, background=lab == 0, source=source)

    @classmethod
    def from_regions(cls, masks: object, source: str = "phantom") -> RegionMasks:
        """Any object with ``body``, ``lung`` and ``background`` arrays, e.g. the phantom's
        ``PhantomMasks`` (``case.masks_ld`` is the truth for the low-dose phase)."""
        try:
            body, lung, background = (
                np.asarray(getattr(masks, k), dtype=bool) for k in ("body", "lung", "background")
            )
        except AttributeError as exc:
            raise InputError(f"{source}: masks need body, lung and background arrays") from exc
        return cls(body=body | lung, lung=lung, background=background, source=source)

    @classmethod
    def from_truth(cls, truth: npt.ArrayLike) -> RegionMasks:
        """Masks computed from the truth itself with the purification mask rules."""
        from ipv2.purification.masks import (
            purification_masks,  # masks pull in more; only needed here
        )

        t = _stack(truth, "truth").astype(np.float32)
        ms = purification_masks(t, t)
        return cls(
            body=ms.body, lung=ms.lung, background=ms.background, source="computed from truth"
        )

    def eroded(self, px: int) -> RegionMasks:
        """Each region shrunk by ``px`` pixels in-plane (slices stay independent)."""
        if px < 0:
            raise InputError(f"erosion must be >= 0 pixels, got {px}")
        if px == 0:
            return self
        r = np.arange(-px, px + 1)
        disk = (r[:, None] ** 2 + r[None, :] ** 2) <= px * px
        structure = disk[np.newaxis]

        def erode(m: BoolArray) -> BoolArray:
            return ndimage.binary_erosion(m, structure=structure)

        return RegionMasks(
            erode(self.body),
            erode(self.lung),
            erode(self.background),
            source=f"{self.source}, eroded {px} px",
        )

    def without(self, excluded: BoolArray) -> RegionMasks:
        """The same regions minus ``excluded`` voxels (e.g. scanner padding)."""
        keep = ~excluded
        return RegionMasks(
            self.body & keep, self.lung & keep, self.background & keep, source=self.source
        )


def mae_in_mask(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, window: HUWindow
) -> float:
    """Mean absolute error (HU) over the masked voxels, images clipped to the window."""
    return float(np.mean(np.abs(_clipped_difference(pred, truth, mask, window=window, what="MAE"))))


def psnr_in_mask(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, window: HUWindow
) -> float:
    """PSNR (dB) over the masked voxels, images clipped to the window; inf when identical."""
    diff = _clipped_difference(pred, truth, mask, window=window, what="PSNR")
    mse = float(np.mean(diff**2))
    return float(10.0 * np.log10(window.width**2 / mse)) if mse > 0 else float("inf")


def _clipped_difference(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, window: HUWindow, what: str
) -> npt.NDArray[np.floating[Any]]:
    """``clip(pred) - clip(truth)`` over the masked voxels, both clipped to the window."""
    p, t = _stack(pred, "prediction"), _stack(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    m = _mask(mask, p.shape, what)
    if not m.any():
        raise InputError(f"the {what} region is empty; check the masks")
    return np.clip(p[m], window.low, window.high) - np.clip(t[m], window.low, window.high)


def ssim_in_mask(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, window: HUWindow
) -> float:
    """Mean of the per-slice SSIM map (7 x 7 uniform window) over the masked pixels."""
    p, t = _stack(pred, "prediction"), _stack(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    if min(p.shape[1:]) < SSIM_WINDOW:
        raise InputError(f"SSIM needs slices of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")
    m = _mask(mask, p.shape, "SSIM")
    total, count = 0.0, 0
    for k in range(p.shape[0]):
        if not m[k].any():
            continue
        _, smap = structural_similarity(
            np.clip(p[k], window.low, window.high),
            np.clip(t[k], window.low, window.high),
            data_range=window.width,
            full=True,
        )
        total += float(smap[m[k]].sum())
        count += int(m[k].sum())
    if count == 0:
        raise InputError("the SSIM region (body) is empty; check the masks")
    return total / count


def ssim_interior(shape: tuple[int, ...]) -> BoolArray:
    """In-plane pixels whose whole SSIM window lies inside the slice.

    Near the border the SSIM window reaches into reflected padding, so scikit-image's
    mean SSIM leaves a margin of ``SSIM_WINDOW // 2`` pixels out; this mask reproduces
    that average with :func:`ssim_in_mask`. Accepts (y, x) or (z, y, x).
    """
    if len(shape) not in (2, 3) or min(shape[-2:]) < SSIM_WINDOW:
        raise InputError(
            f"SSIM needs 2D slices of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, "
            f"got shape {shape}"
        )
    r = SSIM_WINDOW // 2
    inner = np.zeros(shape, dtype=bool)
    inner[..., r:-r, r:-r] = True
    return inner


def image_metrics(pred: npt.ArrayLike, truth: npt.ArrayLike, window: HUWindow) -> dict[str, float]:
    """MAE (HU), PSNR (dB) and SSIM over whole images: what training validation reports.

    Validation has no body mask (its slices are crops of any anatomy), so every pixel
    counts for MAE and PSNR, and SSIM averages the pixels of :func:`ssim_interior`, the
    same mean SSIM that scikit-image's ``structural_similarity`` returns. Keys:
    ``mae_hu``, ``psnr``, ``ssim``.
    """
    p, t = _stack(pred, "prediction"), _stack(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    everywhere = np.ones(p.shape, dtype=bool)
    return {
        "mae_hu": mae_in_mask(p, t, everywhere, window=window),
        "psnr": psnr_in_mask(p, t, everywhere, window=window),
        "ssim": ssim_in_mask(p, t, ssim_interior(p.shape), window=window),
    }


def residual_noise_std(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike
) -> float | None:
    """Std (HU) of ``pred - truth`` over the mask; None when the region is too small."""
    p, t = _stack(pred, "prediction"), _stack(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    m = _mask(mask, p.shape, "noise")
    if int(m.sum()) < MIN_REGION_PIXELS:
        return None
    return float(np.std(p[m] - t[m]))


def region_error(
    pred: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike
) -> tuple[float | None, float | None]:
    """Bias (mean of ``pred - truth``) and RMSE (HU) over the mask; None when too small.

    Bias says whether a region came out too dark or too bright (a constant offset that
    noise figures cancel); RMSE adds bias, noise and blur into one error, so a model
    that is worse than its input in some region shows it there.
    """
    p, t = _stack(pred, "prediction"), _stack(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    m = _mask(mask, p.shape, "bias/RMSE")
    if int(m.sum()) < MIN_REGION_PIXELS:
        return None, None
    diff = p[m] - t[m]
    return float(np.mean(diff)), float(np.sqrt(np.mean(diff**2)))


def scanner_padding(truth: npt.NDArray[np.float64]) -> BoolArray:
    """Padding fills of the truth, below air by more than noise-free air ever is.

    A noise-free truth (the phantom) has constant -1000 HU air touching the border, which
    padding detection alone would take for padding and so drop the whole background; a
    real fill sits at -1024 or lower, so only voxels under -1010 HU count.
    """
    found = detect_padding(truth.astype(np.float32)).mask
    return found & (truth < PADDING_BELOW_HU)


def reference_metrics(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    masks: RegionMasks,
    *,
    window: HUWindow,
    metrics: tuple[str, ...] = ("psnr", "ssim", "noise"),
    erode_px: int = DEFAULT_ERODE_PX,
) -> dict[str, float | int | None]:
    """PSNR/SSIM inside the body, and bias, RMSE and noise per region, as one row.

    Scanner padding found in the truth is left out of every region. Keys: ``psnr``,
    ``ssim``; with "noise", for each of :data:`REGIONS` (background, body without the
    lungs, lung): ``bias_R_hu`` and ``rmse_R_hu`` over the whole region (edges count:
    a dark rim along the body outline is an error) and ``noise_R_hu``, the SD of
    ``pred - truth`` over the region eroded in-plane (None where a region is absent),
    with the pixel counts the noise figures were measured on.
    """
    t = _stack(truth, "truth")
    p = _stack(pred, "prediction")
    if p.shape != t.shape:
        raise InputError(
            f"prediction {p.shape} and truth {t.shape} differ in shape (z, y, x); ground-truth "
            "metrics compare voxel by voxel on one grid"
        )
    _mask(masks.body, t.shape, "body")
    regions = masks.without(scanner_padding(t))
    row: dict[str, float | int | None] = {}
    if "psnr" in metrics:
        row["psnr"] = psnr_in_mask(p, t, regions.body, window=window)
    if "ssim" in metrics:
        row["ssim"] = ssim_in_mask(p, t, regions.body, window=window)
    if "noise" in metrics:
        whole = _disjoint(regions)
        inner = _disjoint(
            RegionMasks(whole["body"], regions.lung, regions.background, regions.source).eroded(
                erode_px
            ),
            body_is_disjoint=True,
        )
        for name in REGIONS:
            row[f"bias_{name}_hu"], row[f"rmse_{name}_hu"] = region_error(p, t, whole[name])
            row[f"noise_{name}_hu"] = residual_noise_std(p, t, inner[name])
            row[f"noise_{name}_pixels"] = int(inner[name].sum())
    return row


def _disjoint(regions: RegionMasks, *, body_is_disjoint: bool = False) -> dict[str, BoolArray]:
    """Background, body without the lungs, lung: each voxel in one region. (Eroding the
    lungless body itself keeps the lung border out of the body's noise figure.)"""
    body = regions.body if body_is_disjoint else regions.body & ~regions.lung
    return {"background": regions.background, "body": body, "lung": regions.lung}
