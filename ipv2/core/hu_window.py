"""HU windows: the mapping between Hounsfield units and network or 8-bit ranges.

A window is part of every trained model and every 8-bit dataset, because the same gray
level means different HU under different windows; it therefore travels as a value, never
as an implicit constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HUWindow:
    """A closed HU interval [low, high] mapped linearly to [-1, 1] or to 0..255."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise InputError(
                f"HU window [{self.low}, {self.high}] is invalid: it needs finite bounds "
                "with low < high, e.g. --window -1024 1024"
            )

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_unit(self, hu: npt.ArrayLike, clip: bool = True) -> FloatArray:
        """HU -> [-1, 1] (clipped by default, as networks see it)."""
        x = (np.asarray(hu, dtype=np.float32) - np.float32(self.low)) / np.float32(self.width)
        if clip:
            x = np.clip(x, 0.0, 1.0)
        return (x * 2.0 - 1.0).astype(np.float32, copy=False)

    def from_unit(self, x: npt.ArrayLike) -> FloatArray:
        """[-1, 1] -> HU."""
        u = (np.asarray(x, dtype=np.float32) + 1.0) * 0.5
        return (u * np.float32(self.width) + np.float32(self.low)).astype(np.float32, copy=False)

    def to_uint8(self, hu: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """HU -> 0..255 with rounding; values outside the window saturate."""
        u = (np.asarray(hu, dtype=np.float32) - np.float32(self.low)) / np.float32(self.width)
        return np.round(np.clip(u, 0.0, 1.0) * 255.0).astype(np.uint8)

    def from_uint8(self, gray: npt.NDArray[np.uint8]) -> FloatArray:
        """0..255 -> HU at the centre of each gray level's bin."""
        g = np.asarray(gray)
        if g.dtype != np.uint8:
            raise InputError(
                f"expected 8-bit gray levels, got {g.dtype}; only 8-bit PNG slices carry a "
                "window-defined HU meaning"
            )
        return (
            g.astype(np.float32) / 255.0 * np.float32(self.width) + np.float32(self.low)
        ).astype(np.float32)

    def to_json(self) -> list[float]:
        return [float(self.low), float(self.high)]

    @classmethod
    def from_json(cls, value: object) -> HUWindow:
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise InputError(f"HU window must be [low, high], got {value!r}")
        return cls(float(value[0]), float(value[1]))


# 8 HU per gray level: well below ultra-low-dose noise (40+ HU), and wide enough to keep
# air, lung, soft tissue and most bone unclipped. Used for the authors' PNG layout.
DEFAULT_PNG_WINDOW = HUWindow(-1024.0, 1024.0)

# The lung window radiologists read chest CT in (W 1500, L -600).
LUNG_DISPLAY_WINDOW = HUWindow(-1350.0, 150.0)
