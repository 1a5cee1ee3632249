"""Training validation uses the metrics package and still reports the numbers it always did.

``ipv2/train/metrics.py`` used to compute MAE, PSNR and SSIM itself; validation now
calls :func:`ipv2.metrics.reference.image_metrics`. The former implementation is kept
here, verbatim, as the yardstick.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from skimage.metrics import structural_similarity

from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow
from ipv2.metrics.reference import image_metrics, ssim_in_mask, ssim_interior
from ipv2.training.validate import _mean, _slice_metrics


def former_slice_metrics(
    pred_hu: npt.NDArray[np.float32], label_hu: npt.NDArray[np.float32], window: HUWindow
) -> dict[str, float]:
    """The removed ``ipv2.training.metrics.slice_metrics``, unchanged."""
    p = np.clip(pred_hu, window.low, window.high).astype(np.float64)
    t = np.clip(label_hu, window.low, window.high).astype(np.float64)
    mae = float(np.mean(np.abs(p - t)))
    mse = float(np.mean((p - t) ** 2))
    psnr = float(10.0 * np.log10(window.width**2 / mse)) if mse > 0 else float("inf")
    ssim = float(structural_similarity(p, t, data_range=window.width))
    return {"mae_hu": mae, "psnr": psnr, "ssim": ssim}


def slice_pair(seed: int, shape: tuple[int, int]) -> tuple[npt.NDArray[np.float32], ...]:
    rng = np.random.default_rng(seed)
    label = rng.normal(-200.0, 400.0, shape).astype(np.float32)
    pred = (label + rng.normal(0.0, 60.0, shape)).astype(np.float32)
    return pred, label


@pytest.mark.parametrize("window", [HUWindow(-1024.0, 1024.0), HUWindow(-160.0, 240.0)])
@pytest.mark.parametrize("shape", [(7, 7), (32, 32), (40, 37), (64, 9)])
def test_validation_metrics_equal_the_former_ones_bit_for_bit(
    window: HUWindow, shape: tuple[int, int]
) -> None:
    """Windows with float32-exact bounds (all integer HU windows): identical numbers."""
    for seed in range(3):
        pred, label = slice_pair(seed, shape)
        assert _slice_metrics(pred, label, window) == former_slice_metrics(pred, label, window)


def test_validation_metrics_match_within_rounding_for_fractional_windows() -> None:
    """The former code clipped float32 images to float32-rounded bounds; now bounds are exact."""
    window = HUWindow(-1000.3, 399.7)
    for seed in range(3):
        pred, label = slice_pair(seed, (40, 37))
        got, want = _slice_metrics(pred, label, window), former_slice_metrics(pred, label, window)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-7), key


def test_identical_slices_give_infinite_psnr_and_unit_ssim() -> None:
    _, label = slice_pair(0, (16, 16))
    window = HUWindow(-1024.0, 1024.0)
    row = _slice_metrics(label, label, window)
    assert row == former_slice_metrics(label, label, window)
    assert row == {"mae_hu": 0.0, "psnr": float("inf"), "ssim": 1.0}


def test_overflow_is_clipped_and_nan_is_reported_not_raised() -> None:
    """A diverged network must not stop training: inf clips to the window, NaN is reported."""
    window = HUWindow(-1024.0, 1024.0)
    pred, label = slice_pair(1, (16, 16))
    pred[3, 4] = np.inf
    assert _slice_metrics(pred, label, window) == former_slice_metrics(pred, label, window)
    pred[5, 5] = np.nan
    row = _slice_metrics(pred, label, window)
    assert set(row) == {"mae_hu", "psnr", "ssim"}
    assert all(np.isnan(v) for v in row.values())


def test_mean_over_slices() -> None:
    rows = [{"mae_hu": 1.0, "psnr": 30.0}, {"mae_hu": 3.0, "psnr": 40.0}]
    assert _mean(rows) == {"mae_hu": 2.0, "psnr": 35.0}
    assert _mean([]) == {}


def test_ssim_interior_reproduces_scikit_images_mean_on_volumes() -> None:
    window = HUWindow(-1024.0, 1024.0)
    pred, label = slice_pair(2, (24, 20))
    vol_p, vol_l = np.stack([pred, label]), np.stack([label, label])
    inner = ssim_interior(vol_p.shape)
    assert inner.shape == vol_p.shape
    assert int(inner[0].sum()) == (24 - 6) * (20 - 6)
    per_slice = [
        former_slice_metrics(p, t, window)["ssim"] for p, t in zip(vol_p, vol_l, strict=True)
    ]
    assert ssim_in_mask(vol_p, vol_l, inner, window=window) == pytest.approx(np.mean(per_slice))
    assert image_metrics(vol_p, vol_l, window)["ssim"] == pytest.approx(np.mean(per_slice))
    with pytest.raises(InputError):
        ssim_interior((6, 30))
    with pytest.raises(InputError):
        image_metrics(pred, label[:-1], window)
