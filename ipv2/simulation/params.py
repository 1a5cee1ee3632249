"""Physical parameters of the low-dose simulation, with their sources.

Defaults (method.md section 4 gives the admissible ranges):

- ``mu_water = 0.0193 / mm``: linear attenuation of water at ~70 keV, the effective
  energy of a 120 kVp spectrum (NIST XCOM mass attenuation 0.193 cm^2/g at 70 keV).
- ``i0_full = 1.5e5`` incident photons per ray (per detector bin and view) at full dose:
  the middle of the 1e5 to 2.5e5 range used by projection-domain low-dose simulators
  (e.g. Zeng et al., IEEE TNS 2015; Yu et al., Med Phys 2012). With our geometry
  (views = pixels across, bins = pixel size) it gives full-dose noise of the order of
  clinical normal-dose CT; the measured figures are in the tests and the CHANGELOG.
- ``electronic_noise_var = 10`` counts^2: the Gaussian detector noise variance of the
  same literature (8 to 11).
- ``dose_fraction = 0.02``: the paper's ultra-low-dose scans (80 kV / 10 mA against
  120 kV / 250 mA) are about 2% of the normal dose by dose-length product. Admissible
  doses are in (0, 1] (:func:`check_dose_fraction`, shared by every command).
- ``count_floor = 1``: measured counts below one photon are set to one before the log,
  as scanners' pre-processing does, so photon starvation yields streaks, not infinities.
- ``filter = "hann"``: the authors' script reconstructs with a Hann-windowed ramp.
- ``keep_resolution = True``: the output is ``input + FBP(noisy - clean sinogram)``, i.e.
  only the simulated noise (and log bias) is added, so the anatomy stays exactly the
  input's, pixel for pixel. The input is already a reconstruction; reconstructing it a
  second time would blur it and move edges, and IPv2 needs ``sim(N)`` aligned with N.
  ``False`` gives the plain pipeline ``FBP(noisy sinogram)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ipv2.core.errors import InputError
from ipv2.simulation.filters import check_filter


def check_dose_fraction(value: float) -> float:
    """``value`` as a dose fraction, or the one-line error every command gives.

    The one definition of an admissible dose: a fraction of the full dose in (0, 1]. The
    phantom, ``simulate``, ``purify``, ``build-dataset``, the Simulator and
    :class:`PhysicsParams` all call this, so ``--dose 5`` (a percentage typed as a
    fraction, or a dose above the normal one that no low-dose study simulates) is refused
    everywhere with the same words. Photons per ray (``--i0``) are another quantity and
    are not bounded here.
    """
    if not (math.isfinite(value) and 0 < value <= 1):
        raise InputError(
            "dose fraction must be a positive fraction of the full dose, at most 1 "
            f"(0.02 means 2%; not a percentage), got {value:g}"
        )
    return float(value)


@dataclass(frozen=True)
class PhysicsParams:
    """Photon statistics and reconstruction settings (see the module docstring)."""

    dose_fraction: float = 0.02
    i0_full: float = 1.5e5
    i0: float | None = None  # photons per ray; when set it overrides dose_fraction
    mu_water: float = 0.0193
    electronic_noise_var: float = 10.0
    count_floor: float = 1.0
    filter: str = "hann"
    n_views: int | None = None
    n_det: int | None = None
    keep_resolution: bool = True

    def __post_init__(self) -> None:
        check_dose_fraction(self.dose_fraction)
        checks = {
            "full-dose I0": self.i0_full,
            "mu_water": self.mu_water,
            "count floor": self.count_floor,
        }
        for name, value in checks.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value}")
        if self.i0 is not None and not (math.isfinite(self.i0) and self.i0 > 0):
            raise InputError(f"I0 (photons per ray) must be positive, got {self.i0}")
        if not (math.isfinite(self.electronic_noise_var) and self.electronic_noise_var >= 0):
            raise InputError(
                f"electronic noise variance must be >= 0 counts^2, got {self.electronic_noise_var}"
            )
        if not 0.005 <= self.mu_water <= 0.05:
            raise InputError(
                f"mu_water {self.mu_water} per mm is outside CT energies (about 0.019 to 0.021 "
                "per mm); give it in mm^-1, not cm^-1"
            )
        object.__setattr__(self, "filter", check_filter(self.filter))

    @property
    def incident_photons(self) -> float:
        """Photons per ray at the simulated dose: ``i0`` or ``dose_fraction * i0_full``."""
        return float(self.i0) if self.i0 is not None else self.dose_fraction * self.i0_full

    @property
    def effective_dose_fraction(self) -> float:
        return self.incident_photons / self.i0_full

    def with_i0(self, i0: float) -> PhysicsParams:
        """The same settings at a given number of photons per ray."""
        return replace(self, i0=float(i0))

    def with_dose(self, dose_fraction: float) -> PhysicsParams:
        """The same settings at a dose fraction (clears any explicit I0)."""
        return replace(self, dose_fraction=float(dose_fraction), i0=None)

    def summary(self) -> dict[str, object]:
        return {
            "dose_fraction": self.effective_dose_fraction,
            "i0": self.incident_photons,
            "i0_full": self.i0_full,
            "mu_water_per_mm": self.mu_water,
            "electronic_noise_var": self.electronic_noise_var,
            "count_floor": self.count_floor,
            "filter": self.filter,
            "keep_resolution": self.keep_resolution,
        }
