"""Flat regions where noise is measured: lung, soft tissue, body, or a user ROI.

Noise is only meaningful where the anatomy is nearly uniform, so the masks are
thresholds on a smoothed copy of the image (which also makes them usable on noisy
ultra-low-dose scans) followed by an erosion that keeps them off edges. They are
measurement masks, not segmentations; the purification stage has its own lung mask.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.core.errors import InputError

BoolArray = npt.NDArray[np.bool_]
REGIONS = ("soft", "lung", "body")

# HU bands on the smoothed image. Soft tissue: muscle, blood, organs (fat, around
# -100 HU, is excluded so the region is one tissue). Lung: aerated parenchyma.
_SOFT_BAND = (-20.0, 120.0)
_LUNG_BAND = (-950.0, -600.0)
_BODY_MIN = -500.0


def region_mask(
    hu: npt.ArrayLike,
    region: str,
    padding: BoolArray | None = None,
    *,
    smoothing_px: float = 2.0,
    erosion_px: int = 3,
) -> BoolArray:
    """Mask (B, H, W) of ``region`` in HU slices (B, H, W); padding never belongs."""
    if region not in REGIONS:
        raise InputError(f"unknown noise region {region!r}; choose one of {', '.join(REGIONS)}")
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    smooth = ndimage.gaussian_filter(arr, sigma=(0.0, smoothing_px, smoothing_px))
    if region == "soft":
        mask = (smooth > _SOFT_BAND[0]) & (smooth < _SOFT_BAND[1])
    elif region == "lung":
        mask = (smooth > _LUNG_BAND[0]) & (smooth < _LUNG_BAND[1]) & _inside_body(arr)
    else:
        mask = smooth > _BODY_MIN
    if padding is not None:
        mask &= ~np.asarray(padding, dtype=bool).reshape(mask.shape)
    if erosion_px > 0:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_erosion(mask, structure=structure, iterations=erosion_px)
    return np.asarray(mask, dtype=bool)


def _inside_body(hu: npt.NDArray[np.float32]) -> BoolArray:
    """Per slice: the filled body outline, so air outside the patient is not 'lung'.

    The outline gets its own light smoothing: the heavier smoothing used to find flat
    regions would open a thin chest wall (a few pixels on coarse grids) and let the
    lungs leak into the outside air.
    """
    smooth = ndimage.gaussian_filter(hu, sigma=(0.0, 1.0, 1.0))
    out = np.zeros(smooth.shape, dtype=bool)
    for k, sl in enumerate(smooth):
        body = sl > _BODY_MIN
        labels, n = ndimage.label(body)
        if n == 0:
            continue
        sizes = ndimage.sum_labels(body, labels, np.arange(1, n + 1))
        largest = labels == (int(np.argmax(sizes)) + 1)
        out[k] = ndimage.binary_fill_holes(largest)
    return out


def erosion_for(shape: tuple[int, ...]) -> int:
    """Edge margin of a noise region in pixels: 3 on clinical grids, less on coarse ones.

    Three pixels keep noise measurements off tissue edges at 0.7-0.9 mm pixels; on a
    128-pixel grid the same margin would swallow a whole lung at the apex.
    """
    side = min(shape[-2:])
    return 3 if side >= 256 else 2 if side >= 128 else 1


def check_roi(roi: npt.ArrayLike, shape: tuple[int, ...], min_pixels: int = 50) -> BoolArray:
    """A user ROI as a boolean mask of ``shape``; refuses empty or mis-shaped masks."""
    mask = np.asarray(roi)
    if mask.ndim == 2 and len(shape) == 3:
        mask = np.broadcast_to(mask, shape)
    if mask.shape != tuple(shape):
        raise InputError(
            f"the ROI mask shape {mask.shape} does not match the volume {tuple(shape)}"
        )
    mask = mask > 0.5 if mask.dtype != bool else mask
    if int(mask.sum()) < min_pixels:
        raise InputError(
            f"the ROI holds {int(mask.sum())} voxels; noise needs at least {min_pixels}, "
            "drawn in a flat region (lung or soft tissue)"
        )
    return np.asarray(mask, dtype=bool)
