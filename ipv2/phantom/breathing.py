"""The breathing deformation between the normal-dose and the low-dose acquisition.

Real uLDCT and NDCT of one patient are acquired at different moments, so the lungs,
diaphragm and chest wall sit a few pixels apart. The phantom reproduces that with a
smooth pull-back displacement ``d``: the low-dose phase at point ``x`` shows the anatomy
found at ``x + d(x)`` in the normal-dose phase. The table does not move, the anterior
chest wall rises and widens, and each lung inflates about its own centre, more towards
the diaphragm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Breathing:
    """Amplitudes in normalised units (1 unit = half the field of view)."""

    rise: float
    widen: float
    inflate: float
    lung_centres: tuple[tuple[float, float, float, float], ...]
    table_v: float
    top_v: float

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        lungs: tuple[tuple[float, float, float, float], ...],
        table_v: float,
        *,
        top_v: float,
        amplitude_mm: float,
        fov_mm: float,
    ) -> Breathing:
        unit = 2.0 / fov_mm  # one millimetre in normalised units
        return cls(
            rise=amplitude_mm * unit * rng.uniform(0.6, 1.0),
            widen=amplitude_mm * unit * rng.uniform(0.3, 0.6),
            inflate=rng.uniform(0.04, 0.07),
            lung_centres=lungs,
            table_v=table_v,
            top_v=top_v,
        )

    def displacement(self, u: F, v: F, z: float) -> tuple[F, F]:
        """Pull-back displacement (du, dv) at points (u, v), height z in [0, 1]."""
        lift = np.clip((self.table_v - v) / (self.table_v - self.top_v), 0.0, 1.0)
        gain = 0.5 + z
        du = -self.widen * gain * u * lift
        dv = self.rise * gain * lift
        for cx, cy, ax, ay in self.lung_centres:
            r2 = ((u - cx) / (ax * 1.3)) ** 2 + ((v - cy) / (ay * 1.3)) ** 2
            bump = np.exp(-(r2**2))
            k = self.inflate * gain * bump
            du = du - k * (u - cx)
            dv = dv - k * (v - cy)
        return du, dv
