"""Cold Diffusion (Bansal et al. 2023) toward the low-dose image, T = 50.

Training: pick a level ``s`` in 1..T, build ``x_s = D(N, s)`` (see
:mod:`ipv2.schemes.blend`), ask the network for the clean image, L1 loss. Sampling: the
improved sampler from ``x_T = U``; ``steps`` below T visits evenly spaced levels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.schemes.base import CancelCheck, Scheme, StepCallback, check_pair
from ipv2.schemes.blend import degrade, improved_sample


class ColdDiffusion(Scheme):
    """Blend degradation over T levels, clean-image prediction, improved sampler."""

    name = "colddiff"

    def __init__(self, steps: int = 50) -> None:
        if int(steps) < 1:
            raise InputError(f"Cold Diffusion needs T >= 1, got {steps}")
        self.total = int(steps)
        self.default_steps = self.total

    def params(self) -> dict[str, Any]:
        return {"steps": self.total}

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        check_pair(low, high)
        s = torch.randint(1, self.total + 1, (low.shape[0],), device=low.device)
        a = 1.0 - s.float() / self.total
        x0 = model(degrade(high, low, a), a, cond)
        return nn.functional.l1_loss(x0.float(), high.float())

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        low: Tensor,
        steps: int | None = None,
        *,
        callback: StepCallback | None = None,
        cancel: CancelCheck | None = None,
        cond: Tensor | None = None,
    ) -> Tensor:
        k = self.resolve_steps(steps)
        return improved_sample(
            model, low, cond, total=self.total, steps=k, callback=callback, cancel=cancel
        )
