"""Low-dose CT simulation (IPv2 Module 2, method.md section 4).

- :mod:`~ipv2.lowdose.projector`: batched parallel-beam projection and FBP in PyTorch
  (CPU and CUDA), filters Ram-Lak, Shepp-Logan, cosine, Hann.
- :mod:`~ipv2.lowdose.physics`: the physical simulation (Poisson + electronic noise).
- :mod:`~ipv2.lowdose.reference`: the authors' script behaviour, for comparison only.
- :mod:`~ipv2.lowdose.calibrate`: dose fitting to a target noise or a real uLDCT.
- :mod:`~ipv2.lowdose.volume_sim`: whole volumes with padding, progress and a report.
"""

from ipv2.lowdose.calibrate import Calibration, calibrate_to_noise, calibrate_to_uldct
from ipv2.lowdose.filters import FILTERS
from ipv2.lowdose.noise_estimate import estimate_noise, noise_index
from ipv2.lowdose.params import PhysicsParams
from ipv2.lowdose.physics import simulate_slices, simulate_slices_with_noise
from ipv2.lowdose.projector import ParallelGeometry, Projector, get_projector, resolve_device
from ipv2.lowdose.reference import reference_simulate_slices
from ipv2.lowdose.regions import REGIONS, region_mask
from ipv2.lowdose.volume_sim import MODES, simulate_volume

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
    "resolve_device",
    "simulate_slices",
    "simulate_slices_with_noise",
    "simulate_volume",
]
