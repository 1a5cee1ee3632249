"""The steps curve: validation RMSE and time per slice at 1, 2, 4 and the configured steps.

Measured once, at the end of a finished run, with the weights the model exports (the
EMA's when there is one), on the validation slices training validates with (the same
count: the sized plan's, ``--val-limit``'s, or at most ``budget.MAX_SLICES``), so it costs
about (1 + 2 + 4 + K) / K validations. ``ipv2 denoise --steps auto`` then picks from it
(:mod:`ipv2.inference.steps_auto`). Only sampled schemes have steps to choose; a
one-pass regressor (RED-CNN, the weak denoiser) gets no curve. Counts above the configured
steps are not measured (Cold Diffusion and CoreDiff cannot sample more steps than their
T; for flow matching the configured K is the most the model was validated with).

Errors are RMSE in HU over all pixels of the slices, prediction and label both clipped
to the model's window (as the validation MAE is); a diverged count is recorded as None.
Times are wall seconds of sampling one slice at batch size 1 on the training device,
after one untimed warm-up pass (allocation, kernel choice): the median over the slices,
so a burst of other work on a shared machine does not skew one step count's figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ipv2.inference.steps_auto import StepsPoint, choose_steps
from ipv2.models.common import Network
from ipv2.schemes.base import Scheme
from ipv2.training.validate import ValidationStopped, Validator

MEASURED_STEPS = (1, 2, 4)


def has_steps(scheme: Scheme) -> bool:
    """Whether sampling ``scheme`` takes a step count worth choosing (not a regressor)."""
    return scheme.name != "regression"


def curve_steps(configured: int) -> list[int]:
    """1, 2, 4 and ``configured``, none above ``configured``."""
    return sorted({k for k in (*MEASURED_STEPS, configured) if k <= configured})


def measure_steps_curve(
    validator: Validator,
    model: Network,
    scheme: Scheme,
    *,
    indices: Sequence[int],
    on_slice: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[StepsPoint]:
    """The curve's points over validation slices ``indices``.

    Raises :class:`ValidationStopped` when ``should_stop()`` turns true between slices.
    """
    counts = curve_steps(int(scheme.default_steps))
    if not indices:
        return []
    validator.predict(model, scheme, indices[0], steps=1)  # warm-up, not timed
    total = len(counts) * len(indices)
    done = 0
    points = []
    low, high = validator.window.low, validator.window.high
    for steps in counts:
        squared, pixels, seconds = 0.0, 0, []
        for index in indices:
            if should_stop is not None and should_stop():
                raise ValidationStopped(done, total)
            began = time.perf_counter()
            pred, label = validator.predict(model, scheme, index, steps=steps)
            seconds.append(time.perf_counter() - began)
            diff = np.clip(pred, low, high).astype(np.float64) - np.clip(label, low, high)
            squared += float(np.sum(diff * diff))
            pixels += diff.size
            done += 1
            if on_slice is not None:
                on_slice(done, total)
        rmse = math.sqrt(squared / max(pixels, 1))
        points.append(
            StepsPoint(steps, rmse if math.isfinite(rmse) else None, float(np.median(seconds)))
        )
    return points


def curve_record(
    points: Sequence[StepsPoint], *, device: str, slice_shape: tuple[int, int], slices: int
) -> dict[str, Any]:
    """The ``model.json`` entries: ``steps_curve``, ``steps_auto`` and where it was measured."""
    return {
        "steps_curve": [p.to_json() for p in points],
        "steps_auto": choose_steps(list(points)),
        "steps_curve_basis": {
            "device": device,
            "slice_shape": [int(slice_shape[0]), int(slice_shape[1])],
            "slices": int(slices),
            "batch_size": 1,
            "error": "RMSE in HU, prediction and label clipped to the model's window",
        },
    }
