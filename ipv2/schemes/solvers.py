"""Explicit Euler for ``dx/dt = v(x, t)``, kept apart from networks and schemes.

A scheme decides *what* velocity to follow (a network's output, a blend's slope); the
solver only decides *how* to step along it, so the step arithmetic lives in one place
and can be tested against analytic answers without any model. The velocity is any
callable ``v(x, t)`` that takes the state and a (B,)-shaped float32 time tensor on the
state's device (what networks of this project take as time). One call per step: the
cost of sampling is exactly ``steps`` velocity evaluations.

Each step is ``x + h * v(x, t)`` with ``h`` a Python float, in that order, so a scheme
that switches to these functions produces bit-identical results to a hand-written loop
with the same step sizes and times.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from torch import Tensor

from ipv2.core.errors import InputError
from ipv2.schemes.base import batch_time

Velocity = Callable[[Tensor, Tensor], Tensor]
# Called after every step with (steps done, total steps); may raise to stop sampling.
SolverCallback = Callable[[int, int], None]


def euler(
    velocity: Velocity,
    x0: Tensor,
    *,
    steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    callback: SolverCallback | None = None,
) -> Tensor:
    """Integrate from ``t0`` to ``t1`` in ``steps`` equal steps of ``(t1 - t0) / steps``.

    Step ``i`` evaluates the velocity at ``t0 + i * h`` and advances by exactly ``h``
    (not by a difference of grid times, which rounding would make unequal), which is
    the arithmetic flow-matching samplers use.
    """
    if steps < 1:
        raise InputError(f"Euler integration needs at least 1 step, got {steps}")
    h = (t1 - t0) / steps
    return _integrate(velocity, x0, [(t0 + i * h, h) for i in range(steps)], callback=callback)


def euler_on_grid(
    velocity: Velocity,
    x0: Tensor,
    *,
    times: Sequence[float],
    callback: SolverCallback | None = None,
) -> Tensor:
    """Integrate along a given time grid ``times[0] -> times[-1]`` (uneven steps allowed).

    For samplers whose visited times are fixed by a schedule, e.g. rounded degradation
    levels; step ``i`` evaluates the velocity at ``times[i]`` and advances by
    ``times[i + 1] - times[i]``. The grid may run backwards in ``t`` too.
    """
    if len(times) < 2:
        raise InputError(f"a time grid needs at least 2 points, got {len(times)}")
    steps = [(float(a), float(b) - float(a)) for a, b in itertools.pairwise(times)]
    return _integrate(velocity, x0, steps, callback=callback)


def _integrate(
    velocity: Velocity,
    x0: Tensor,
    steps: Sequence[tuple[float, float]],
    *,
    callback: SolverCallback | None,
) -> Tensor:
    """The one Euler loop: ``x <- x + h * v(x, t)`` for each ``(t, h)``."""
    x = x0
    total = len(steps)
    for i, (t, h) in enumerate(steps):
        x = x + h * velocity(x, batch_time(t, x0))
        if callback is not None:
            callback(i + 1, total)
    return x
