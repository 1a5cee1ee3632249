"""Small analytic test objects in HU: a chest-like slice and a water cylinder.

They let the simulator's tests and benchmark run anywhere (no patient data) on objects
whose truth is known. They are not the project's ground-truth phantom (issue #2).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# (centre x, centre y, semi-axis x, semi-axis y) as fractions of the image size, HU.
_CHEST_ELLIPSES: tuple[tuple[float, float, float, float, float], ...] = (
    (0.50, 0.52, 0.42, 0.30, 40.0),  # soft-tissue body
    (0.50, 0.52, 0.40, 0.28, -90.0),  # subcutaneous fat ring (inner part overwritten)
    (0.50, 0.52, 0.37, 0.25, 40.0),  # muscle / chest wall
    (0.32, 0.50, 0.13, 0.19, -850.0),  # right lung
    (0.68, 0.50, 0.13, 0.19, -850.0),  # left lung
    (0.50, 0.55, 0.07, 0.08, 45.0),  # heart / mediastinum
    (0.50, 0.73, 0.035, 0.035, 700.0),  # vertebral body
    (0.47, 0.30, 0.02, 0.02, 40.0),  # aorta
)


def _ellipse(n: int, cx: float, cy: float, *, ax: float, ay: float) -> npt.NDArray[np.bool_]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def chest_slice(size: int = 256, vessels: bool = True) -> FloatArray:
    """An axial chest-like slice (air, fat, muscle, lungs with vessels, spine) in HU."""
    img = np.full((size, size), -1000.0, dtype=np.float32)
    for cx, cy, ax, ay, hu in _CHEST_ELLIPSES:
        img[_ellipse(size, cx, cy, ax=ax, ay=ay)] = hu
    if vessels:
        rng = np.random.default_rng(7)
        for cx in (0.32, 0.68):
            for _ in range(12):
                x = cx + rng.uniform(-0.09, 0.09)
                y = 0.50 + rng.uniform(-0.14, 0.14)
                r = rng.uniform(0.004, 0.010)
                img[_ellipse(size, x, y, ax=r, ay=r)] = 30.0
    return img


def water_cylinder(
    size: int = 256,
    diameter_px: float = 200.0,
    inserts_hu: float | None = None,
    *,
    insert_radius_px: float = 12.0,
    insert_offset_px: float = 60.0,
) -> FloatArray:
    """A centred water disc (0 HU) in air; optionally two dense inserts left and right.

    The inserts sit on the horizontal line through the centre, so the rays along that
    line cross both and carry the fewest photons: that is where streaks appear.
    """
    img = np.full((size, size), -1000.0, dtype=np.float32)
    c = size / 2.0
    img[
        _ellipse(size, c / size, c / size, ax=diameter_px / 2 / size, ay=diameter_px / 2 / size)
    ] = 0.0
    if inserts_hu is not None:
        r = insert_radius_px / size
        for dx in (-insert_offset_px, insert_offset_px):
            img[_ellipse(size, (c + dx) / size, c / size, ax=r, ay=r)] = float(inserts_hu)
    return img
