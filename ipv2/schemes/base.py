"""What every generative scheme provides: a training loss and a sampler.

Schemes are kept apart from networks (as paths and solvers are kept apart from models in
flow-matching libraries) so any registered network can be trained by any scheme whose
inputs it accepts. All tensors are in the network range [-1, 1]; ``low`` is the
low-dose input (t = 0), ``high`` the target (t = 1), ``cond`` an optional condition
(the low-dose slice with neighbours, for CoreDiff) that defaults to ``low``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ipv2.core.errors import CancelledError, InputError

StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


class Scheme:
    """Base class: ``loss`` for training, ``sample`` for inference (no gradients)."""

    name: str = ""
    default_steps: int = 1

    def loss(
        self, model: nn.Module, low: Tensor, high: Tensor, *, cond: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

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
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Hyper-parameters written to ``model.json`` (rebuild with ``make_scheme``)."""
        return {}

    def resolve_steps(self, steps: int | None) -> int:
        k = self.default_steps if steps is None else int(steps)
        if k < 1:
            raise InputError(f"{self.name} sampling needs at least 1 step, got {k}")
        return k


def check_pair(low: Tensor, high: Tensor) -> None:
    if low.shape != high.shape:
        raise InputError(
            f"low-dose and target batches differ in shape: {tuple(low.shape)} vs {tuple(high.shape)}"
        )


def step_hooks(
    i: int, total: int, callback: StepCallback | None, *, cancel: CancelCheck | None
) -> None:
    """Report progress after step ``i`` and honour a cancel request between steps."""
    if callback is not None:
        callback(i, total)
    if cancel is not None and i < total and cancel():
        raise CancelledError(f"sampling cancelled after {i} of {total} steps")


def batch_time(value: float | Tensor, like: Tensor) -> Tensor:
    """A (B,) time tensor on ``like``'s device."""
    return torch.as_tensor(value, dtype=torch.float32, device=like.device).expand(like.shape[0])


def bcast(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) in ``like``'s dtype, for mixing images."""
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
