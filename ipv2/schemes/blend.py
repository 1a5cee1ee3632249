"""Deterministic blends toward the low-dose image, shared by Cold Diffusion and CoreDiff.

Both degrade the normal-dose image ``N`` toward the low-dose image ``U`` in ``T`` steps:
``D(N, s) = a_s * N + (1 - a_s) * U`` with ``a_s = 1 - s / T`` (s = 0 is clean, s = T is
the low-dose image itself). Both restore with the improved (Bansal) sampler
``x_{s'} = x_s - D(x0_hat, s) + D(x0_hat, s')``, which cancels the restorer's error to
first order instead of re-degrading its prediction. Networks see time ``a_s`` in [0, 1],
the same "progress toward normal dose" that flow matching uses. Because the blend is
linear in ``a``, the improved sampler is Euler integration in ``a`` (see
:func:`improved_sample`), and it uses the same solver as flow matching.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.schemes.base import CancelCheck, StepCallback, step_hooks
from ipv2.schemes.solvers import euler_on_grid


def degrade(clean: Tensor, low: Tensor, a: Tensor) -> Tensor:
    """``a * clean + (1 - a) * low`` with ``a`` broadcast per sample."""
    a = a.to(clean.dtype).reshape(-1, *([1] * (clean.ndim - 1)))
    return a * clean + (1.0 - a) * low


def schedule(total: int, steps: int) -> list[int]:
    """Degradation levels visited by a sampler with ``steps`` calls: T ... 0, evenly."""
    if not 1 <= steps <= total:
        raise InputError(f"sampling steps must be between 1 and T = {total}, got {steps}")
    levels = np.round(np.linspace(total, 0, steps + 1)).astype(int)
    return [int(v) for v in levels]


def improved_sample(
    model: nn.Module,
    low: Tensor,
    cond: Tensor | None,
    *,
    total: int,
    steps: int,
    callback: StepCallback | None,
    cancel: CancelCheck | None,
) -> Tensor:
    """Bansal's improved sampler from ``x_T = low``; one network call per step.

    ``x - D(x0, s) + D(x0, s')`` with the linear blend is ``x + (a_{s'} - a_s) * (x0 - low)``:
    an Euler step in ``a`` along the velocity ``dD/da = x0 - low``, so it runs on the
    shared Euler solver over the grid of visited levels (bit-identical to writing it out).
    """
    times = [1.0 - s / total for s in schedule(total, steps)]

    def velocity(x: Tensor, a: Tensor) -> Tensor:
        x0: Tensor = model(x, a, cond)
        return x0 - low

    def hooks(i: int, n: int) -> None:
        step_hooks(i, n, callback, cancel=cancel)

    return euler_on_grid(velocity, low, times=times, callback=hooks)
