"""Direct regression: one network call from the low-dose image to the target.

The scheme of the RED-CNN baseline and of the weak denoiser (Module 3, method.md
section 5): a plain pixel loss (L1 by default, or MSE) on ``model(low)``. Networks with a
time input receive ``t = 0``, so a UNet or FFM can serve as the weak denoiser too ("the
same architecture and size as the main network").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.schemes.base import CancelCheck, Scheme, StepCallback, batch_time, check_pair, step_hooks


class Regression(Scheme):
    """``model(low) -> high`` with an L1 or MSE loss; sampling is exactly one call."""

    name = "regression"

    def __init__(self, steps: int = 1, loss: str = "l1") -> None:
        if loss not in ("l1", "mse"):
            raise InputError(f"regression loss must be 'l1' or 'mse', got {loss!r}")
        if int(steps) != 1:
            raise InputError(
                f"regression makes exactly one network call; steps must be 1, got {steps}"
            )
        self.loss_name = loss
        self.default_steps = 1

    def params(self) -> dict[str, Any]:
        return {"steps": 1, "loss": self.loss_name}

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        check_pair(low, high)
        out = model(low, batch_time(0.0, low), cond).float()
        if self.loss_name == "l1":
            return nn.functional.l1_loss(out, high.float())
        return nn.functional.mse_loss(out, high.float())

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
        if steps not in (None, 1):
            raise InputError(
                f"regression makes exactly one network call; steps must be 1, got {steps}"
            )
        out: Tensor = model(low, batch_time(0.0, low), cond)
        step_hooks(1, 1, callback, cancel=cancel)
        return out
