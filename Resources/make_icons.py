"""Regenerate the extension and module icons from the built-in phantom.

Run from the repository root: ``python Resources/make_icons.py``. The icons show a
phantom chest slice in the lung window, noisy on one side of a diagonal and clean on the
other (IPv2Denoise), or with a rising loss curve overlay (IPv2Train); no third-party art.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ipv2.core.hu_window import LUNG_DISPLAY_WINDOW
from ipv2.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[1]


def _rgba(gray: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    rgb = np.stack([gray * t for t in tint], axis=-1)
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 63.5, xx - 63.5)
    alpha = np.clip((64 - r) * 4, 0, 255)  # round icon with a soft edge
    return np.concatenate([rgb, alpha[..., None]], axis=-1).clip(0, 255).astype(np.uint8)


def _save(path: Path, rgba: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(rgba, isVector=True), str(path))


def main() -> None:
    case = make_phantom(size=256, slices=3, seed=4)
    k = 1
    noisy = LUNG_DISPLAY_WINDOW.to_uint8(case.uldct.array[k]).astype(float)
    clean = LUNG_DISPLAY_WINDOW.to_uint8(case.clean_ld.array[k]).astype(float)
    crop = (slice(40, 216), slice(40, 216))
    noisy = ndimage.zoom(noisy[crop], 128 / 176, order=1)
    clean = ndimage.zoom(clean[crop], 128 / 176, order=1)
    yy, xx = np.mgrid[:128, :128]
    split = np.where(xx + yy < 128, noisy, clean)
    split[np.abs(xx + yy - 128) < 1.5] = 255
    _save(ROOT / "IPv2.png", _rgba(split, (1.0, 1.0, 1.0)))
    _save(ROOT / "IPv2Denoise/Resources/Icons/IPv2Denoise.png", _rgba(split, (0.85, 0.95, 1.0)))
    train = clean.copy()
    curve_x = np.arange(14, 114)
    curve_y = (30 + 70 * np.exp(-(curve_x - 14) / 25)).astype(int)
    for x, y in zip(curve_x, curve_y, strict=True):
        train[y - 2 : y + 2, x] = 255
    _save(ROOT / "IPv2Train/Resources/Icons/IPv2Train.png", _rgba(train, (1.0, 0.92, 0.8)))


if __name__ == "__main__":
    main()
