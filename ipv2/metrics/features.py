"""Feature extractors: CT slices in HU -> one feature vector per slice.

FID, KID and CLIP-FID compare distributions of features, so the extractor and the way a
CT slice is turned into the RGB image it expects decide what the numbers mean. Every
extractor therefore states its conventions (:meth:`FeatureExtractor.conventions`) and
the evaluation report carries them.

The shared first step is the HU window: HU -> [0, 1] clipped (:func:`windowed_unit`).
Pretrained extractors (``ipv2.metrics.pretrained``) then repeat the gray channel three
times and resize; :class:`PixelStatsExtractor` is a small deterministic stand-in for
tests and smoke runs, never a substitute for Inception or CLIP in reported results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow

FloatArray = npt.NDArray[np.float32]
Features = npt.NDArray[np.float64]


@runtime_checkable
class FeatureExtractor(Protocol):
    """Turns 2D HU slices into an (N, D) float64 feature matrix."""

    name: str

    def conventions(self) -> dict[str, object]:
        """How slices become network input (window, channels, size, normalisation)."""
        ...

    def features(self, slices: Sequence[FloatArray], window: HUWindow) -> Features:
        """One row per slice; slices may differ in size."""
        ...


def windowed_unit(slice_hu: npt.ArrayLike, window: HUWindow) -> FloatArray:
    """HU -> [0, 1] through ``window`` (clipped): the gray image every extractor starts from."""
    arr = np.asarray(slice_hu, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"feature extractors take 2D slices, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("a slice holds NaN or infinite values; features need finite HU")
    return ((window.to_unit(arr) + 1.0) * 0.5).astype(np.float32)


def unit_batch(slices: Sequence[FloatArray], window: HUWindow, size: int) -> torch.Tensor:
    """Windowed slices resized to ``size`` x ``size`` (area/bilinear), as (N, 1, s, s) float32."""
    out = []
    for s in slices:
        t = torch.from_numpy(windowed_unit(s, window))[None, None]
        mode = "area" if min(t.shape[-2:]) >= size else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        out.append(F.interpolate(t, size=(size, size), mode=mode, **kwargs))
    return torch.cat(out, dim=0)


class PixelStatsExtractor:
    """A deterministic stand-in extractor: no network, no weights, same features everywhere.

    Features of one slice (all from the windowed [0, 1] image):

    * a fixed Gaussian random projection (seeded) of the slice downsampled to ``grid`` x
      ``grid`` by area averaging: coarse anatomy;
    * the intensity histogram (``bins`` bins over [0, 1], as fractions): contrast and the
      spread that noise adds;
    * the histogram of absolute differences between neighbouring pixels at full
      resolution (``bins`` bins over [0, 0.25]): fine texture, which is what denoising
      changes most.

    It exists so tests and researchers can run the real FID/KID code paths quickly and
    reproducibly. Its numbers are not comparable to Inception FID or to published
    values, and ``ipv2 evaluate`` never uses it unless explicitly asked.
    """

    name = "pixelstats"

    def __init__(self, seed: int = 0, grid: int = 16, projections: int = 32, bins: int = 16):
        if grid < 2 or projections < 1 or bins < 2:
            raise InputError("PixelStatsExtractor needs grid >= 2, projections >= 1, bins >= 2")
        self.seed, self.grid, self.projections, self.bins = seed, grid, projections, bins
        rng = np.random.default_rng(seed)
        self._matrix = rng.standard_normal((grid * grid, projections)) / grid

    @property
    def dim(self) -> int:
        return self.projections + 2 * self.bins

    def conventions(self) -> dict[str, object]:
        return {
            "extractor": "PixelStatsExtractor (deterministic stand-in, not Inception/CLIP)",
            "input": "HU window -> [0, 1] clipped, one channel, native size",
            "features": (
                f"{self.projections} seeded random projections of a {self.grid}x{self.grid} "
                f"area downsample + {self.bins}-bin intensity histogram + {self.bins}-bin "
                "neighbour-difference histogram"
            ),
            "seed": self.seed,
            "dim": self.dim,
        }

    def features(self, slices: Sequence[FloatArray], window: HUWindow) -> Features:
        if len(slices) == 0:
            return np.zeros((0, self.dim), dtype=np.float64)
        small = unit_batch(slices, window, self.grid).reshape(len(slices), -1).double().numpy()
        rows = [small @ self._matrix]
        intensity, texture = [], []
        for s in slices:
            u = windowed_unit(s, window).astype(np.float64)
            intensity.append(np.histogram(u, bins=self.bins, range=(0.0, 1.0))[0] / u.size)
            diffs = np.concatenate(
                [np.abs(np.diff(u, axis=0)).ravel(), np.abs(np.diff(u, axis=1)).ravel()]
            )
            hist = np.histogram(np.minimum(diffs, 0.25), bins=self.bins, range=(0.0, 0.25))[0]
            texture.append(hist / max(diffs.size, 1))
        rows += [np.asarray(intensity), np.asarray(texture)]
        return np.concatenate(rows, axis=1).astype(np.float64)
