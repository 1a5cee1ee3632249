"""Pixel metrics of validation: MAE in HU, PSNR and SSIM over the model's HU window.

Computed with numpy and scikit-image (torchmetrics is optional in this project); PSNR
and SSIM use the window width as data range, so values compare across runs only for the
same window, which checkpoints record.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from skimage.metrics import structural_similarity

from ipv2.intensity import HUWindow

FloatArray = npt.NDArray[np.float32]


def slice_metrics(pred_hu: FloatArray, label_hu: FloatArray, window: HUWindow) -> dict[str, float]:
    """MAE (HU), PSNR (dB) and SSIM of one 2D slice, both clipped to the window."""
    p = np.clip(pred_hu, window.low, window.high).astype(np.float64)
    t = np.clip(label_hu, window.low, window.high).astype(np.float64)
    mae = float(np.mean(np.abs(p - t)))
    mse = float(np.mean((p - t) ** 2))
    psnr = float(10.0 * np.log10(window.width**2 / mse)) if mse > 0 else float("inf")
    ssim = float(structural_similarity(p, t, data_range=window.width))
    return {"mae_hu": mae, "psnr": psnr, "ssim": ssim}


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
