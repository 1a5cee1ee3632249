"""Analytic shape primitives evaluated at arbitrary coordinates.

The phantom is defined as functions of continuous coordinates rather than as pixels, so
the second breathing phase is the same anatomy evaluated at displaced coordinates; the
two phases then differ by exactly the deformation the phantom reports, nothing else.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]


def superellipse(
    u: F,
    v: F,
    cx: float,
    *,
    cy: float,
    ax: float,
    ay: float,
    power: float = 2.0,
    angle: float = 0.0,
) -> npt.NDArray[np.bool_]:
    """Inside test for a (rotated) superellipse; power 2 is an ellipse, larger is boxier."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    return np.asarray((np.abs(du / ax) ** power + np.abs(dv / ay) ** power) <= 1.0)


def segment_distance(
    px: F, py: F, pz: float, *, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> F:
    """Distance from points (px, py, pz) to the 3D segment a-b (a vessel or airway axis)."""
    ab = b - a
    denom = float(ab @ ab)
    t = ((px - a[0]) * ab[0] + (py - a[1]) * ab[1] + (pz - a[2]) * ab[2]) / max(denom, 1e-12)
    t = np.clip(t, 0.0, 1.0)
    dx = px - (a[0] + t * ab[0])
    dy = py - (a[1] + t * ab[1])
    dz = pz - (a[2] + t * ab[2])
    return np.asarray(np.sqrt(dx * dx + dy * dy + dz * dz))
