"""Scan noise for the phantom.

TEMPORARY image-domain model, used until the projection-domain simulator of issue #4
lands: stationary Gaussian noise, lightly low-pass filtered to mimic the correlated
grain of filtered back-projection, with a standard deviation that scales as
1/sqrt(dose). It has no streaks and no dependence on the anatomy; the physical model
replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage


@dataclass(frozen=True)
class NoiseModel:
    """Noise at full dose, in HU, for a 512-pixel-equivalent acquisition."""

    full_dose_sigma_hu: float = 12.0
    grain_px: float = 0.7

    def describe(self) -> dict[str, object]:
        return {
            "model": "image-domain gaussian (temporary)",
            "full_dose_sigma_hu": self.full_dose_sigma_hu,
            "grain_px": self.grain_px,
        }


def add_scan_noise(
    clean: npt.NDArray[np.float32],
    pixel_mm: float,
    dose: float,
    seed: int,
    model: NoiseModel,
    size: int,
) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(clean.shape)
    grain = ndimage.gaussian_filter(white, sigma=(0, model.grain_px, model.grain_px))
    grain /= grain.std() + 1e-12
    sigma = model.full_dose_sigma_hu / np.sqrt(dose)
    return (clean + sigma * grain).astype(np.float32)
