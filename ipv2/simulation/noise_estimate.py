"""Noise level of a CT image with no clean reference (for matching a real uLDCT).

The estimate is the standard deviation of the residual after a 5 x 5 in-plane median
filter, inside a flat region, after dropping residuals beyond 3 robust deviations
(1.4826 x median absolute deviation) from the median. A median smoother keeps edges, so
what remains in flat regions is mostly noise; the clipping drops the few vessels and
edges that survive the region's erosion, while keeping the statistical efficiency of a
standard deviation (a plain MAD is about twice as variable between noise realisations).

The residual sees only the fine-grained part of CT noise (the median follows some of the
coarse, correlated part), so the figure is an *index* of the noise, lower than the true
standard deviation. That is fine for calibration because the same estimator is applied
to the real scan and to the simulation in the same kind of region, and the dose is fitted
until the two indices agree; both figures go into the report. In-plane residuals are used
rather than differences of adjacent slices because real reconstructions often overlap
slices, which correlates their noise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.simulation.regions import erosion_for, region_mask

MAD_TO_STD = 1.4826
_MEDIAN_SIZE = 5
_MIN_PIXELS = 100  # a std from 100 residuals is within about 7%
_CLIP = 3.0


def noise_index(hu: npt.ArrayLike, mask: npt.NDArray[np.bool_], what: str = "image") -> float:
    """Clipped standard deviation of the median-filter residual inside ``mask`` (HU)."""
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    m = np.asarray(mask, dtype=bool).reshape(arr.shape)
    if int(m.sum()) < _MIN_PIXELS:
        raise InputError(
            f"the {what} has only {int(m.sum())} voxels in the noise region; it needs at "
            f"least {_MIN_PIXELS} (pick another region, or check that it is a chest CT in HU)"
        )
    smooth = ndimage.median_filter(arr, size=(1, _MEDIAN_SIZE, _MEDIAN_SIZE))
    residual = (arr - smooth)[m].astype(np.float64)
    centre = float(np.median(residual))
    spread = MAD_TO_STD * float(np.median(np.abs(residual - centre)))
    if spread == 0.0:
        return 0.0
    kept = residual[np.abs(residual - centre) <= _CLIP * spread]
    return float(kept.std())


def estimate_noise(
    hu: npt.ArrayLike,
    region: str = "soft",
    padding: npt.NDArray[np.bool_] | None = None,
    *,
    what: str = "image",
) -> float:
    """:func:`noise_index` in the image's own ``region`` (smoothed thresholds, eroded)."""
    arr = np.asarray(hu, dtype=np.float32)
    mask = region_mask(arr, region, padding, smoothing_px=3.0, erosion_px=erosion_for(arr.shape))
    return noise_index(arr, mask, what)
