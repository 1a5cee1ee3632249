"""How purification masks are made: the options every mask function, report and manifest share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from ipv2.core.errors import InputError

Variant = Literal["paper", "reference", "anatomical"]
BackgroundRule = Literal["outside-body", "corners"]

VARIANTS: tuple[str, ...] = ("paper", "reference", "anatomical")
"""``anatomical`` (:mod:`ipv2.purification.anatomical`) is ours, not the paper's: lungs
connected in 3D, the patient without the table, a noise-scaled opening."""
BACKGROUND_RULES: tuple[str, ...] = ("outside-body", "corners")


@dataclass(frozen=True)
class MaskOptions:
    """How the masks are made; every field is recorded in reports and manifests."""

    variant: Variant = "paper"
    threshold_hu: float | None = None  # fixed HU threshold instead of Otsu
    opening_radius: int = 1  # 1 = the paper's 3x3 disk; 0 = no opening (anatomical: minimum)
    connectivity: int = 4  # flood-fill connectivity in the slice plane: 4 or 8
    background_rule: BackgroundRule = "outside-body"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"mask variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.background_rule not in BACKGROUND_RULES:
            raise InputError(
                f"background rule must be one of {BACKGROUND_RULES}, got {self.background_rule!r}"
            )
        if self.connectivity not in (4, 8):
            raise InputError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if not 0 <= int(self.opening_radius) <= 10:
            raise InputError(f"opening radius must be 0..10 pixels, got {self.opening_radius}")
        # 8.0 or numpy integers pass the checks above; OpenCV wants plain ints.
        object.__setattr__(self, "connectivity", int(self.connectivity))
        object.__setattr__(self, "opening_radius", int(self.opening_radius))
        if self.threshold_hu is not None and not np.isfinite(self.threshold_hu):
            raise InputError(f"threshold must be a finite HU value, got {self.threshold_hu}")

    def to_json(self) -> dict[str, object]:
        return asdict(self)
