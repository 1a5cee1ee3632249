"""Module 2's ``S = sim(N)`` in the form the purification pipeline calls: ``(N, U) -> S``.

One object carries the dose, the seed and whether the dose is fitted to the case's own
uLDCT, so the CLI, the dataset builder and the Slicer workflows simulate the same way and
record the same description in their reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipv2.core.events import Reporter
from ipv2.core.volume import Volume
from ipv2.simulation.modulation import Modulation
from ipv2.simulation.params import PhysicsParams


@dataclass(frozen=True)
class Simulator:
    """Physical low-dose simulation of N; with ``match_uldct`` the dose is fitted per case.

    The fit makes the simulated noise in the lungs match the real uLDCT U (method.md
    section 4, calibration c): the lungs of IPv2's training input, where S is pasted,
    then carry the noise level the model meets at test time. ``modulation``: the per-slice
    tube current (:mod:`ipv2.simulation.modulation`; on by default, as for ``simulate``).
    """

    params: PhysicsParams = field(default_factory=PhysicsParams)
    match_uldct: bool = False
    seed: int = 0
    modulation: Modulation = field(default_factory=Modulation)

    @classmethod
    def for_dose(
        cls,
        dose_fraction: float,
        *,
        match_uldct: bool = False,
        seed: int = 0,
        modulation: Modulation | None = None,
    ) -> Simulator:
        return cls(
            PhysicsParams(dose_fraction=dose_fraction),
            match_uldct,
            seed,
            modulation if modulation is not None else Modulation(),
        )

    def __call__(self, n: Volume, u: Volume, reporter: Reporter | None = None) -> Volume:
        """S for N (U when the dose is fitted); ``reporter`` gets per-slice progress."""
        target = u if self.match_uldct else None
        from ipv2.simulation.volume_sim import simulate_volume  # loads torch

        sim, _ = simulate_volume(
            n,
            self.params,
            seed=self.seed,
            match_uldct=target,
            region="lung",
            modulation=self.modulation,
            reporter=reporter,
        )
        return sim

    @property
    def description(self) -> str:
        how = (
            "dose fitted per case to its uLDCT"
            if self.match_uldct
            else f"dose fraction {self.params.dose_fraction}"
        )
        if self.modulation.enabled:
            how += f", tube-current modulation strength {self.modulation.strength:g}"
        return f"ipv2.simulation physical simulation ({how})"
