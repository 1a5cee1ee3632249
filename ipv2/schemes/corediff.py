"""CoreDiff (Gao et al. 2023): mean-preserving blend U -> N over T = 10 levels.

``x_t = a_t * N + (1 - a_t) * U`` (method.md section 7, no added Gaussian noise), a
restorer conditioned on the low-dose slice (``cond``, default ``low``), and a two-stage
loss that trains on the network's own outputs the way sampling uses them:

1. ``x0_1 = R(x_t, t)`` from the exact state; loss ``|x0_1 - N|^2``.
2. re-degrade the (detached) prediction one level down,
   ``x_{t-1} = x_t - D(x0_1, t) + D(x0_1, t-1)`` (the sampler's own update), restore again
   ``x0_2 = R(x_{t-1}, t-1)``; loss ``|x0_2 - N|^2``.

The second stage exposes the restorer to the drift it will see at inference, which is
what the error-modulation module of :class:`ipv2.models.corediff.CoreDiffNet` reads.
The one-shot learning stage of the original paper is not implemented (optional per
method.md). Sampling: the improved sampler, T calls by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.schemes.base import CancelCheck, Scheme, StepCallback, check_pair
from ipv2.schemes.blend import degrade, improved_sample


class CoreDiff(Scheme):
    """Conditioned blend restoration with a two-stage loss and the improved sampler."""

    name = "corediff"

    def __init__(self, steps: int = 10, second_stage_weight: float = 1.0) -> None:
        if int(steps) < 1:
            raise InputError(f"CoreDiff needs T >= 1, got {steps}")
        self.total = int(steps)
        self.default_steps = self.total
        self.second_stage_weight = float(second_stage_weight)

    def params(self) -> dict[str, Any]:
        return {"steps": self.total, "second_stage_weight": self.second_stage_weight}

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        check_pair(low, high)
        c = low if cond is None else cond
        s = torch.randint(1, self.total + 1, (low.shape[0],), device=low.device)
        a_s = 1.0 - s.float() / self.total
        a_n = 1.0 - (s.float() - 1.0) / self.total
        x_s = degrade(high, low, a_s)
        x0_1 = model(x_s, a_s, c)
        loss = nn.functional.mse_loss(x0_1.float(), high.float())
        if self.second_stage_weight > 0:
            step = (a_n - a_s).to(x_s.dtype).reshape(-1, 1, 1, 1)
            x_n = x_s + step * (x0_1.detach().to(x_s.dtype) - low)
            x0_2 = model(x_n, a_n, c)
            loss = loss + self.second_stage_weight * nn.functional.mse_loss(
                x0_2.float(), high.float()
            )
        return loss

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
        c = low if cond is None else cond
        return improved_sample(
            model, low, c, total=self.total, steps=k, callback=callback, cancel=cancel
        )
