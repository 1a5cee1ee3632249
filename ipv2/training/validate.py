"""Validation with the scheme's own sampler against the label (MAE/PSNR/SSIM).

Validation measures what inference will produce: the full K-step (or T-step) sampler
from the low-dose slice, on whole slices, padded by reflection to the network's stride
and cropped back, so metrics never see padding. The metrics themselves are the metrics
package's (:func:`ipv2.metrics.reference.image_metrics`), so validation and evaluation
cannot drift apart in how PSNR or SSIM is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    """Evenly spread slices (deterministic), all of them when ``limit`` is 0.

    Slice 0 is always first, so the slice timed to size the budget is part of every set.
    """
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted({int(v) for v in np.rint(np.linspace(0, n - 1, limit))})


class ValidationStopped(Exception):
    """A stop request arrived between validation slices; the partial mean is discarded."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"validation interrupted after {done} of {total} slices")
        self.done = done
        self.total = total


class Validator:
    """Validation one slice at a time, so the loop can time it, show it and stop it.

    A validation on a CPU can take minutes (the full sampler on whole slices); the
    training loop reports each slice as progress, measures the first to size the
    validation budget (:mod:`ipv2.training.budget`) and polls stop requests in between.
    """

    def __init__(
        self,
        pairs: SlicePairs,
        *,
        window: HUWindow,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        seed: int = 0,
        low_transform: LowTransform | None = None,
    ) -> None:
        self.pairs = pairs
        self.window = window
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.seed = seed
        self.low_transform = low_transform

    def slice_metrics(self, model: Network, scheme: Scheme, index: int) -> dict[str, float]:
        """Sample slice ``index`` from its low-dose input and score it against its label."""
        pred, label = self.predict(model, scheme, index)
        return _slice_metrics(pred, label, self.window)

    @torch.no_grad()
    def predict(
        self, model: Network, scheme: Scheme, index: int, *, steps: int | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Slice ``index`` sampled with ``steps`` (default: the scheme's) and its label, in HU."""
        model.eval()
        low_hu, label_hu, cond_hu = self.pairs.slices(index)
        if self.low_transform is not None:
            low_hu = self.low_transform(label_hu, [self.seed, 2**31 - 1, index])
            cond_hu = low_hu
        window, device = self.window, self.device
        low, h, w = pad_to_stride(
            torch.from_numpy(window.to_unit(low_hu[None])).to(device), model.stride
        )
        cond = None
        if model.cond_channels:
            cond, _, _ = pad_to_stride(
                torch.from_numpy(window.to_unit(cond_hu[None])).to(device), model.stride
            )
        with torch.autocast(
            device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            out = scheme.sample(model, low, steps, cond=cond)
        pred = window.from_unit(out[0, 0, :h, :w].float().cpu().numpy())
        return np.asarray(pred, dtype=np.float32), np.asarray(label_hu[0], dtype=np.float32)

    def run(
        self,
        model: Network,
        scheme: Scheme,
        indices: Sequence[int],
        *,
        on_slice: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict[str, float]]:
        """Each slice's metrics over ``indices``; ``on_slice(done, total)`` after each.

        Raises :class:`ValidationStopped` when ``should_stop()`` turns true between slices.
        """
        rows = []
        for done, index in enumerate(indices):
            if should_stop is not None and should_stop():
                raise ValidationStopped(done, len(indices))
            rows.append(self.slice_metrics(model, scheme, index))
            if on_slice is not None:
                on_slice(done + 1, len(indices))
        return rows


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
    """Mean metrics over ``limit`` evenly spread slices (all when 0), in one call."""
    validator = Validator(
        pairs,
        window=window,
        device=device,
        autocast_dtype=autocast_dtype,
        seed=seed,
        low_transform=low_transform,
    )
    return mean_metrics(validator.run(model, scheme, validation_indices(len(pairs), limit)))


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


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over slices (empty when nothing was validated)."""
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


_mean = mean_metrics  # the name the metric tests import
