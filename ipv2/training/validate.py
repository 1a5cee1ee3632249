"""Validation with the scheme's own sampler against the label (MAE/PSNR/SSIM).

Validation measures what inference will produce: the full K-step (or T-step) sampler
from the low-dose slice, on whole slices, padded by reflection to the network's stride
and cropped back, so metrics never see padding. The metrics themselves are the metrics
package's (:func:`ipv2.metrics.reference.image_metrics`), so validation and evaluation
cannot drift apart in how PSNR or SSIM is computed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from ipv2.core.hu_window import HUWindow
from ipv2.data.training_pairs import LowTransform, SlicePairs
from ipv2.metrics.reference import image_metrics
from ipv2.models.common import Network, pad_to_stride
from ipv2.schemes.base import Scheme

METRIC_KEYS = ("mae_hu", "psnr", "ssim")


def validation_indices(n: int, limit: int) -> list[int]:
    """Evenly spread slices (deterministic), all of them when ``limit`` is 0."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted({int(v) for v in np.rint(np.linspace(0, n - 1, limit))})


@torch.no_grad()
def validate(
    model: Network,
    scheme: Scheme,
    pairs: SlicePairs,
    *,
    window: HUWindow,
    device: torch.device,
    limit: int,
    autocast_dtype: torch.dtype | None,
    seed: int = 0,
    low_transform: LowTransform | None = None,
) -> dict[str, float]:
    model.eval()
    rows = []
    for i in validation_indices(len(pairs), limit):
        low_hu, label_hu, cond_hu = pairs.slices(i)
        if low_transform is not None:
            low_hu = low_transform(label_hu, [seed, 2**31 - 1, i])
            cond_hu = low_hu
        low, h, w = pad_to_stride(
            torch.from_numpy(window.to_unit(low_hu[None])).to(device), model.stride
        )
        cond = None
        if model.cond_channels:
            cond, _, _ = pad_to_stride(
                torch.from_numpy(window.to_unit(cond_hu[None])).to(device), model.stride
            )
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            out = scheme.sample(model, low, cond=cond)
        pred = window.from_unit(out[0, 0, :h, :w].float().cpu().numpy())
        rows.append(_slice_metrics(pred, label_hu[0], window))
    return _mean(rows)


def _slice_metrics(
    pred_hu: npt.NDArray[np.float32], label_hu: npt.NDArray[np.float32], window: HUWindow
) -> dict[str, float]:
    """One slice's metrics; a diverged network gives NaN rows instead of stopping training.

    Metrics clip to the window anyway, so clipping first turns an overflow (inf) into the
    window's edge as before; NaN survives clipping, and the metrics package refuses
    non-finite input, so such a slice is reported as NaN and training goes on.
    """
    pred = np.clip(pred_hu, window.low, window.high)
    if np.isnan(pred).any():
        return dict.fromkeys(METRIC_KEYS, float("nan"))
    return image_metrics(pred, label_hu, window)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over slices (empty when nothing was validated)."""
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
