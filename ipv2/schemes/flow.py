"""Flow matching from the low-dose image (method.md section 7, FM and FFM).

Linear path ``x_t = (1 - t) * U + t * N`` with ``t ~ U[0, 1]``, velocity target
``N - U`` under MSE. Sampling integrates the learned velocity with Euler from ``x_0 = U``
in ``K`` equal steps of ``1 / K`` at times ``0, 1/K, ..., (K-1)/K``: exactly K network
calls (the paper's K = 10), which is what "10 steps" costs at inference. The stepping
itself is :func:`ipv2.schemes.solvers.euler`; this scheme only supplies the velocity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ipv2.schemes.base import (
    CancelCheck,
    Scheme,
    StepCallback,
    bcast,
    check_pair,
    step_hooks,
)
from ipv2.schemes.solvers import euler


class FlowMatching(Scheme):
    """Rectified linear path U -> N, velocity regression, K-step Euler."""

    name = "flow"

    def __init__(self, steps: int = 10) -> None:
        self.default_steps = int(steps)
        self.resolve_steps(None)

    def params(self) -> dict[str, Any]:
        return {"steps": self.default_steps}

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        check_pair(low, high)
        t = torch.rand(low.shape[0], device=low.device)
        tb = bcast(t, low)
        x_t = (1.0 - tb) * low + tb * high
        v = model(x_t, t, cond)
        return nn.functional.mse_loss(v.float(), (high - low).float())

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

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            v: Tensor = model(x, t, cond)
            return v

        def hooks(i: int, total: int) -> None:
            step_hooks(i, total, callback, cancel=cancel)

        return euler(velocity, low, steps=k, t0=0.0, t1=1.0, callback=hooks)
