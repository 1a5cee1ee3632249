"""The :class:`Volume` value: CT voxels in HU plus the geometry that places them in space.

Geometry follows ITK and Slicer conventions so it converts to SimpleITK images and MRML
volume nodes without reinterpretation: ``spacing`` and ``origin`` are in (x, y, z) order,
in millimetres and LPS patient coordinates; ``direction`` is the 3x3 matrix whose columns
are the directions of the i, j, k index axes. The voxel array itself is indexed
``array[z, y, x]``, so one axial slice is ``array[k]``. A 2D slice is a volume of depth 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError

FloatArray = npt.NDArray[np.float32]
Triple = tuple[float, float, float]


def _triple(values: Sequence[float], name: str) -> Triple:
    if len(values) != 3:
        raise InputError(f"{name} needs three values (x, y, z), got {list(values)}")
    x, y, z = (float(v) for v in values)
    return (x, y, z)


@dataclass(frozen=True, eq=False)
class Volume:
    """CT voxels (float32 HU, z/y/x) with spacing, origin and direction."""

    array: FloatArray
    spacing: Triple = (1.0, 1.0, 1.0)
    origin: Triple = (0.0, 0.0, 0.0)
    direction: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3:
            raise InputError(
                f"a CT volume must be 2D or 3D, got an array of shape {arr.shape}; "
                "4D or multi-component images (time series, RGB) are not CT series"
            )
        if 0 in arr.shape:
            raise InputError(f"the volume is empty (shape {arr.shape})")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InputError(f"voxels must be real numbers, got dtype {arr.dtype}")
        object.__setattr__(self, "array", np.ascontiguousarray(arr, dtype=np.float32))
        spacing = _triple(self.spacing, "spacing")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"spacing must be positive millimetres, got {spacing}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _triple(self.origin, "origin"))
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.size == 9:
            direction = direction.reshape(3, 3)
        if direction.shape != (3, 3) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
            raise InputError(f"direction must be an orthonormal 3x3 matrix, got {direction}")
        object.__setattr__(self, "direction", direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (z, y, x)

    @property
    def depth(self) -> int:
        return self.array.shape[0]

    @property
    def pixel_size_mm(self) -> float:
        """In-plane pixel size; the low-dose physics needs it to scale line integrals."""
        return float(np.sqrt(self.spacing[0] * self.spacing[1]))

    def with_array(self, array: npt.ArrayLike) -> Volume:
        """A new volume on the same grid (e.g. a mask or a denoised result)."""
        arr = np.asarray(array)
        if arr.shape != self.array.shape and arr.shape != self.array.shape[1:]:
            raise InputError(f"array shape {arr.shape} does not match the volume {self.shape}")
        return Volume(arr, self.spacing, self.origin, direction=self.direction.copy())

    def slices(self, start: int, stop: int) -> Volume:
        """Slices ``start:stop`` with the origin moved so they stay where they were."""
        if not 0 <= start < stop <= self.depth:
            raise InputError(f"slice range {start}:{stop} outside 0:{self.depth}")
        shift = self.direction[:, 2] * self.spacing[2] * start
        origin = tuple(np.asarray(self.origin) + shift)
        return Volume(self.array[start:stop], self.spacing, origin, direction=self.direction.copy())

    def grid_differences(self, other: Volume, tol: float = 1e-4) -> list[str]:
        """What differs between the two grids, as sentences; empty when they match."""
        diffs: list[str] = []
        if self.shape != other.shape:
            diffs.append(f"shape (z, y, x) {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=tol):
            diffs.append(f"spacing (x, y, z) mm {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=tol):
            diffs.append("direction (orientation) matrices differ")
        return diffs


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
