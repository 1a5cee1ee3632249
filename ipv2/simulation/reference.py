"""REFERENCE MODE: the behaviour of the authors' published noise script, for comparison.

This is *not* the physical simulation. It reproduces, as method.md section 4 describes
it, what the IPv2 authors' script does to one slice, so our numbers can be set beside
theirs:

1. min-max normalise the slice to [0, 1];
2. scikit-image ``radon`` over ``max(H, W)`` angles in [0, 180), divided by 500;
3. incident flux ``2e5 * k`` with ``k = 0.015 * mAs + 0.1002`` and ``mAs = 2.5``;
4. Poisson counts, plus Gaussian noise of standard deviation ``0.05 * sqrt(counts)``;
5. ``-log(counts / flux) * 500``, ``iradon`` with a Hann filter;
6. min-max rescale to 8 bit.

Step 6 is why the pasted lungs come out darker than real ones: the rescale maps the noisy
reconstruction's extremes, not fixed HU, to 0 and 255. To return a volume in HU we map
the 8-bit result back through the input slice's own [min, max], which is what the
authors' 8-bit pipeline implicitly assumes. Counts are floored at 1 before the log
(the script's behaviour for zero counts is not documented; a floor avoids infinities).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from skimage.transform import iradon, radon

from ipv2.simulation.physics import AIR_HU, check_slices

FloatArray = npt.NDArray[np.float32]

REFERENCE_MAS = 2.5
REFERENCE_FLUX = 2e5
SINOGRAM_SCALE = 500.0
GAUSSIAN_FRACTION = 0.05


def reference_flux(mas: float = REFERENCE_MAS) -> float:
    """Incident photons of the authors' script: ``2e5 * (0.015 * mAs + 0.1002)``."""
    return REFERENCE_FLUX * (0.015 * mas + 0.1002)


def reference_slice_8bit(
    image: npt.NDArray[np.floating], rng: np.random.Generator, mas: float = REFERENCE_MAS
) -> npt.NDArray[np.uint8]:
    """Steps 1-6 on one 2D slice; returns the script's 8-bit image."""
    img = np.asarray(image, dtype=np.float64)
    low, high = float(img.min()), float(img.max())
    norm = (img - low) / (high - low) if high > low else np.zeros_like(img)
    theta = np.linspace(0.0, 180.0, max(img.shape), endpoint=False)
    with warnings.catch_warnings():
        # skimage warns when the image is not zero outside the inscribed circle; the
        # script ignores that, and so does the reference.
        warnings.simplefilter("ignore", UserWarning)
        sino = radon(norm, theta=theta) / SINOGRAM_SCALE
    flux = reference_flux(mas)
    counts = rng.poisson(flux * np.exp(-sino)).astype(np.float64)
    counts = counts + rng.normal(0.0, 1.0, counts.shape) * GAUSSIAN_FRACTION * np.sqrt(counts)
    counts = np.maximum(counts, 1.0)
    noisy = -np.log(counts / flux) * SINOGRAM_SCALE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        recon = iradon(noisy, theta=theta, filter_name="hann", output_size=max(img.shape))
    rlow, rhigh = float(recon.min()), float(recon.max())
    scaled = (recon - rlow) / (rhigh - rlow) if rhigh > rlow else np.zeros_like(recon)
    out = np.round(scaled * 255.0).astype(np.uint8)
    return _crop_center(out, img.shape)


def _crop_center(image: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    h, w = shape
    top = (image.shape[0] - h) // 2
    left = (image.shape[1] - w) // 2
    return image[top : top + h, left : left + w]


def reference_simulate_slices(
    hu: np.ndarray,
    seed: int = 0,
    padding: np.ndarray | None = None,
    *,
    first_index: int = 0,
    mas: float = REFERENCE_MAS,
    progress: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """The reference behaviour on HU slices (B, H, W), mapped back to each slice's HU range."""
    arr = check_slices(hu, 1.0, padding)
    out = np.empty_like(arr)
    for k, sl in enumerate(arr):
        work = sl.copy()
        pad = None if padding is None else np.asarray(padding[k], dtype=bool)
        if pad is not None:
            work[pad] = AIR_HU
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, first_index + k])
        eight = reference_slice_8bit(work, rng, mas).astype(np.float32)
        low, high = float(work.min()), float(work.max())
        res = low + eight / 255.0 * (high - low)
        if pad is not None:
            res[pad] = sl[pad]
        out[k] = res
        if progress is not None:
            progress(k + 1, arr.shape[0])
    return out
