"""Flow matching from the low-dose image (method.md section 7, FM and FFM).

Linear path ``x_t = (1 - t) * U + t * N`` with ``t ~ U[0, 1]``, velocity target
``N - U`` under MSE. Sampling integrates the learned velocity with Euler from ``x_0 = U``
in ``K`` equal steps of ``1 / K`` at times ``0, 1/K, ..., (K-1)/K``: exactly K network
calls (the paper's K = 10), which is what "10 steps" costs at inference. The stepping
itself is :func:`ipv2.schemes.solvers.euler`; this scheme only supplies the velocity.

``times="sampler"`` draws the training time from those K sampler times instead of
``U[0, 1]``. A one-step student (``ipv2 distill``) is then trained at ``t = 0`` only,
where its single Euler step evaluates it: on the demo phantom, a base-16 student trained
at uniform times with its teacher's budget came out 1.20x its teacher's RMSE against
the truth in the background and the body, because most of its training went to times
it never visits. The price is that the network is only trained for its own K (its
steps curve, measured at the end of training, shows other step counts for what they
are, and ``--steps auto`` picks K).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
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

    TIMES = ("uniform", "sampler")

    def __init__(self, steps: int = 10, times: str = "uniform") -> None:
        if times not in self.TIMES:
            raise InputError(f"flow matching times must be one of {self.TIMES}, got {times!r}")
        self.default_steps = int(steps)
        self.times = times
        self.resolve_steps(None)

    def params(self) -> dict[str, Any]:
        # "times" only when not the paper's: metadata of uniform models stays as it was.
        if self.times == "uniform":
            return {"steps": self.default_steps}
        return {"steps": self.default_steps, "times": self.times}

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        check_pair(low, high)
        t = torch.rand(low.shape[0], device=low.device)
        if self.times == "sampler":  # the Euler sampler's own times 0, 1/K, ..., (K-1)/K
            t = torch.floor(t * self.default_steps) / self.default_steps
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
