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
LOW_DOSE_INDEX_HU = 35.0
"""Soft-tissue noise index above which an input is flagged as already low-dose (HU).

Normal-dose body CT reconstructed with a soft-tissue kernel has a noise std of roughly
10 to 25 HU in soft tissue; the index reads somewhat lower than the std (0.8 to 0.85 of
it on this simulator's noise). The A0001 chest series measures 7.6 HU, its 2% simulation
about 130 HU. An index above 35 HU (a std above about 40 HU) means a quarter of a normal
dose or less, or a very sharp kernel on thin slices: either way simulating 2% of it
overshoots a real ultra-low-dose scan.
"""


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


def input_noise_index(
    hu: npt.ArrayLike, padding: npt.NDArray[np.bool_] | None = None, *, max_slices: int = 8
) -> float | None:
    """Noise index (HU) of an input volume in soft tissue, or None where it has too little.

    Measured on up to ``max_slices`` slices spread through the volume (the median filter
    over a whole series would cost seconds, and noise varies slowly along z).
    """
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    pad = None if padding is None else np.asarray(padding, dtype=bool).reshape(arr.shape)
    picks = np.unique(np.round(np.linspace(0, arr.shape[0] - 1, max_slices)).astype(int))
    sub = arr[picks]
    sub_pad = None if pad is None else pad[picks]
    try:
        return estimate_noise(sub, "soft", sub_pad, what="input")
    except InputError:
        return None


def low_dose_warning(
    hu: npt.ArrayLike, padding: npt.NDArray[np.bool_] | None = None
) -> tuple[float | None, str | None]:
    """The input's soft-tissue noise index and, when it looks low-dose already, a warning.

    Simulating a low dose adds noise on top of the input's own; from an input that is
    itself low-dose, "2% of the dose" is 2% of a reduced dose, far noisier than a real
    ultra-low-dose scan. See :data:`LOW_DOSE_INDEX_HU` for the threshold.
    """
    index = input_noise_index(hu, padding)
    if index is None or index <= LOW_DOSE_INDEX_HU:
        return index, None
    return index, (
        f"warning: the input's noise in soft tissue measures {index:.0f} HU (noise index; normal-dose "
        f"CT with a soft-tissue kernel stays below about {LOW_DOSE_INDEX_HU:.0f}): it looks "
        "low-dose already (or reconstructed with a sharp kernel). The simulated dose comes "
        "on top of the input's own, so the result will be far noisier than a real "
        "ultra-low-dose scan; use a normal-dose series, or fit the dose with --match-uldct "
        "or --match-noise"
    )
