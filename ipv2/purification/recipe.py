"""A purification recipe: one row of the ablation table (method.md section 6).

The strategy (IPv1 or IPv2) and the set of IPv2 modules decide which formula builds the
training input and which builds the evaluation label; :meth:`Recipe.describe` writes
those formulas out for reports and manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ipv2.core.errors import InputError
from ipv2.purification.mask_options import MaskOptions
from ipv2.purification.modules import ALL_MODULES, Module, modules_from

Strategy = Literal["ipv1", "ipv2"]

STRATEGIES: tuple[str, ...] = ("ipv1", "ipv2")
DEFAULT_T = 0.1


@dataclass(frozen=True)
class Recipe:
    """Strategy, modules and their parameters; every field is recorded in reports."""

    strategy: Strategy = "ipv2"
    modules: frozenset[Module] = field(default_factory=lambda: ALL_MODULES)
    t: float = DEFAULT_T
    feather_px: float = 0.0
    masks: MaskOptions = field(default_factory=MaskOptions)
    # Module 1 also fuses the outline band (background in one image only), so the pair
    # agrees on where the body ends; False is the paper's literal L (ablation, issue 14).
    align_outline: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        object.__setattr__(self, "modules", modules_from(self.modules))
        if not 0.0 <= self.t <= 1.0:
            raise InputError(f"texture mix T must lie in [0, 1], got {self.t}")
        if self.feather_px < 0:
            raise InputError(f"feathering must be >= 0 pixels, got {self.feather_px}")

    @classmethod
    def for_strategy(
        cls,
        strategy: str,
        modules: frozenset[Module] | frozenset[int] | None = None,
        **kw: object,
    ) -> Recipe:
        """``ipv1`` defaults to no module, ``ipv2`` to all three; explicit modules win."""
        if modules is None:
            modules = ALL_MODULES if strategy == "ipv2" else frozenset()
        return cls(strategy=strategy, modules=modules, **kw)  # type: ignore[arg-type]

    @property
    def removes_background(self) -> bool:
        return Module.REMOVE_BACKGROUND in self.modules

    @property
    def needs_simulated(self) -> bool:
        """Module 2 (Add Noise) builds the input from ``S = sim(N)``."""
        return Module.ADD_NOISE in self.modules

    @property
    def needs_weak(self) -> bool:
        """Module 3 (Remove Noise) builds the label from ``W = weak(U)``."""
        return Module.REMOVE_NOISE in self.modules

    def describe(self) -> dict[str, str]:
        """The formulas this recipe applies, for reports and manifests."""
        r = ("(L|B)" if self.align_outline else "L") if self.removes_background else "M"
        inp = f"{r}*S + (1-{r})*U" if self.needs_simulated else f"{r}*N + (1-{r})*((1-T)*U + T*N)"
        lab = f"{r}*W + (1-{r})*N" if self.needs_weak else f"{r}*U + (1-{r})*N"
        where = {
            "L": "L = lung mask (background removed)",
            "(L|B)": "L = lung mask (background removed), B = background in one image only",
            "M": "M = common(U, N)",
        }[r]
        return {"input": inp, "label": lab, "region": where}

    def to_json(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "modules": sorted(int(m) for m in self.modules),
            "module_names": [m.title for m in sorted(self.modules)],
            "T": self.t,
            "feather_px": self.feather_px,
            "align_outline": self.align_outline if self.removes_background else None,
            "masks": self.masks.to_json(),
            "formulas": self.describe(),
        }
