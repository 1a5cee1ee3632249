"""Low-dose CT simulation (IPv2 Module 2, method.md section 4).

- :mod:`~ipv2.simulation.projector`: batched parallel-beam projection and FBP in PyTorch
  (CPU and CUDA), filters Ram-Lak, Shepp-Logan, cosine, Hann.
- :mod:`~ipv2.simulation.physics`: the physical simulation (Poisson + electronic noise).
- :mod:`~ipv2.simulation.reference`: the authors' script behaviour, for comparison only.
- :mod:`~ipv2.simulation.calibrate`: dose fitting to a target noise or a real uLDCT.
- :mod:`~ipv2.simulation.volume_sim`: whole volumes with padding, progress and a report.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipv2.simulation.calibrate import Calibration, calibrate_to_noise, calibrate_to_uldct
    from ipv2.simulation.filters import FILTERS
    from ipv2.simulation.noise_estimate import estimate_noise, noise_index
    from ipv2.simulation.params import PhysicsParams
    from ipv2.simulation.physics import simulate_slices, simulate_slices_with_noise
    from ipv2.simulation.projector import ParallelGeometry, Projector, get_projector
    from ipv2.simulation.reference import reference_simulate_slices
    from ipv2.simulation.regions import REGIONS, region_mask
    from ipv2.simulation.volume_sim import MODES, simulate_volume

# Loaded on first use: the projector needs torch (seconds to import), and every CLI
# command imports some small part of this package (the dose check, the modulation option).
_HOMES = {
    "Calibration": "calibrate", "calibrate_to_noise": "calibrate",
    "calibrate_to_uldct": "calibrate", "FILTERS": "filters", "estimate_noise": "noise_estimate",
    "noise_index": "noise_estimate", "PhysicsParams": "params", "simulate_slices": "physics",
    "simulate_slices_with_noise": "physics", "ParallelGeometry": "projector",
    "Projector": "projector", "get_projector": "projector",
    "reference_simulate_slices": "reference", "REGIONS": "regions", "region_mask": "regions",
    "MODES": "volume_sim", "simulate_volume": "volume_sim",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "FILTERS",
    "MODES",
    "REGIONS",
    "Calibration",
    "ParallelGeometry",
    "PhysicsParams",
    "Projector",
    "calibrate_to_noise",
    "calibrate_to_uldct",
    "estimate_noise",
    "get_projector",
    "noise_index",
    "reference_simulate_slices",
    "region_mask",
    "simulate_slices",
    "simulate_slices_with_noise",
    "simulate_volume",
]
