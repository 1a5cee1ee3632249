"""Training pairs ``(sim(N), N)`` for the weak denoiser, simulated on the fly.

When the dataset has no ``sim`` kind, ``ipv2 train --weak-denoiser`` simulates the low-dose
input from each NDCT slice through :mod:`ipv2.simulation`, with a seed that is a pure
function of (seed, epoch, slice), so runs stay reproducible and resumable.
"""

from __future__ import annotations

import numpy as np

from ipv2.data.training_pairs import DatasetInfo, FloatArray, LowTransform

DEFAULT_PIXEL_MM = 0.7


def dataset_pixel_mm(info: DatasetInfo) -> float:
    """In-plane pixel size from the manifest's case geometry (the simulation needs mm)."""
    for case in info.manifest.get("cases", []):
        geometry = case.get("geometry", case) if isinstance(case, dict) else {}
        spacing = geometry.get("spacing") if isinstance(geometry, dict) else None
        if isinstance(spacing, (list, tuple)) and len(spacing) >= 2:
            return float(np.sqrt(float(spacing[0]) * float(spacing[1])))
    return DEFAULT_PIXEL_MM


def make_simulator(dose_fraction: float, pixel_mm: float) -> LowTransform:
    """``sim(N)`` per slice through :func:`ipv2.simulation.simulate_slices`."""
    from ipv2.simulation import PhysicsParams, simulate_slices

    params = PhysicsParams(dose_fraction=dose_fraction)

    def simulate(hu: FloatArray, seed: list[int]) -> FloatArray:
        s = int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])
        out = np.asarray(simulate_slices(hu, pixel_mm, params, seed=s), dtype=np.float32)
        return out.reshape(hu.shape)

    return simulate
