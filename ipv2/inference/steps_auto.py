"""Sampler steps chosen by measurement: the steps curve of ``model.json`` and its rule.

Each sampler step is one network pass per slice, so the step count is the main cost of a
flow-matching (or Cold Diffusion, CoreDiff) denoiser, and more steps do not always help:
on the demo's phantom one Euler step gave the same error as ten (issue 14). So training
ends by measuring (:mod:`ipv2.training.steps_curve`) the validation RMSE and the time per
slice at 1, 2, 4 and the configured steps, and writes them to ``model.json``::

    "steps_curve": [{"steps": 1, "rmse_hu": 74.1, "seconds_per_slice": 0.02}, ...],
    "steps_auto": 1,
    "steps_curve_basis": {"device": "cpu", "slice_shape": [64, 64], "slices": 4, ...}

``--steps auto`` (``ipv2 denoise``'s default) takes the fewest measured steps whose RMSE
is within :func:`tolerance_hu` of the best measured RMSE. The tolerance is the larger of
2% of the best RMSE and 1 HU: 2% of the 50-100 HU a denoiser leaves on ultra-low-dose CT
is 1-2 HU, a fraction of one grey level in the lung window a reader uses (1500 HU over
256 levels: about 6 HU a level), and the 1 HU floor keeps a very good model from chasing
differences smaller than a validation of a few slices can resolve. The rule is applied
to the curve whenever a model is used (``steps_auto`` records what training chose, for
people reading the file), so a hand-written curve works too. Models without a curve
(trained before it was measured, stopped before the end, or without a validation split)
keep their configured steps, and say so in one line.

No torch here: the model card and the Slicer panel read the curve before PyTorch exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ipv2.core.errors import InputError

CURVE_KEY = "steps_curve"
AUTO_KEY = "steps_auto"
BASIS_KEY = "steps_curve_basis"
AUTO = "auto"

TOLERANCE_RELATIVE = 0.02  # of the best measured RMSE
TOLERANCE_HU = 1.0  # the least tolerance, in HU


@dataclass(frozen=True)
class StepsPoint:
    """One measured step count: validation RMSE (None: diverged) and seconds per slice."""

    steps: int
    rmse_hu: float | None
    seconds_per_slice: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "rmse_hu": None if self.rmse_hu is None else round(self.rmse_hu, 3),
            "seconds_per_slice": (
                None if self.seconds_per_slice is None else round(self.seconds_per_slice, 5)
            ),
        }


@dataclass(frozen=True)
class StepsCurve:
    """The measured points, by increasing steps, and where they were measured."""

    points: tuple[StepsPoint, ...]
    basis: Mapping[str, Any]

    @property
    def slice_shape(self) -> tuple[int, int] | None:
        shape = self.basis.get("slice_shape")
        if isinstance(shape, list) and len(shape) == 2 and all(_positive_int(v) for v in shape):
            return int(shape[0]), int(shape[1])
        return None

    def seconds_per_slice(self, steps: int, shape: tuple[int, int] | None = None) -> float | None:
        """Expected seconds per slice at ``steps``, scaled to a slice of ``shape`` pixels.

        A measured count gives its own time; another count takes the per-step time of
        the most steps measured (the sampler's cost is linear in steps). The network's
        cost is about linear in pixels, so a measured slice of another size is scaled by
        the pixel ratio. Measured on the training device at batch size 1: a guide, not a
        promise (batches make each slice cheaper on a GPU).
        """
        timed = [p for p in self.points if p.seconds_per_slice is not None]
        if not timed:
            return None
        exact = [p for p in timed if p.steps == steps]
        if exact:
            seconds = float(exact[0].seconds_per_slice or 0.0)
        else:
            longest = max(timed, key=lambda p: p.steps)
            seconds = float(longest.seconds_per_slice or 0.0) / longest.steps * steps
        measured = self.slice_shape
        if shape is not None and measured is not None:
            seconds *= (shape[0] * shape[1]) / (measured[0] * measured[1])
        return seconds

    def describe(self) -> str:
        """'1: 74.1 HU, 0.020 s; 2: 73.0 HU, 0.041 s; ...' for logs and the model card."""
        parts = []
        for p in self.points:
            rmse = "diverged" if p.rmse_hu is None else f"{p.rmse_hu:.1f} HU"
            time = "" if p.seconds_per_slice is None else f", {_seconds(p.seconds_per_slice)}"
            parts.append(f"{p.steps}: {rmse}{time}")
        return "; ".join(parts)

    def where(self) -> str:
        """'on cpu, 4 validation slices of 64x64' (what is known of the measurement)."""
        bits = []
        if self.basis.get("device"):
            bits.append(f"on {self.basis['device']}")
        shape = self.slice_shape
        slices = self.basis.get("slices")
        if _positive_int(slices):
            bits.append(
                f"{slices} validation slice{'s' if slices != 1 else ''}"
                + (f" of {shape[0]}x{shape[1]}" if shape else "")
            )
        return ", ".join(bits)


def tolerance_hu(best_rmse_hu: float) -> float:
    """How far above the best RMSE a step count may be and still count as as good."""
    return max(TOLERANCE_RELATIVE * best_rmse_hu, TOLERANCE_HU)


def choose_steps(points: tuple[StepsPoint, ...] | list[StepsPoint]) -> int | None:
    """The fewest steps whose RMSE is within :func:`tolerance_hu` of the best; None when no
    point has a finite RMSE."""
    finite = [p for p in points if p.rmse_hu is not None and math.isfinite(p.rmse_hu)]
    if not finite:
        return None
    best = min(float(p.rmse_hu or 0.0) for p in finite)
    limit = best + tolerance_hu(best)
    return min(p.steps for p in finite if float(p.rmse_hu or 0.0) <= limit)


def read_curve(meta: Mapping[str, Any]) -> tuple[StepsCurve | None, str | None]:
    """The curve of a ``model.json`` body, or (None, why not) when absent or unusable.

    ``model.json`` may be hand-edited, so every entry is checked; an unusable curve is
    reported, not raised, because the model itself still works with its configured steps.
    """
    raw = meta.get(CURVE_KEY)
    if raw is None:
        return None, "its model.json has no steps curve (measured at the end of training)"
    if not isinstance(raw, list) or not raw:
        return None, f"its model.json's {CURVE_KEY} is not a non-empty list"
    points: dict[int, StepsPoint] = {}
    for entry in raw:
        point = _point(entry)
        if point is None:
            return None, f"its model.json's {CURVE_KEY} has an unusable entry {entry!r}"
        if point.steps in points:
            return None, f"its model.json's {CURVE_KEY} lists {point.steps} steps twice"
        points[point.steps] = point
    basis = meta.get(BASIS_KEY)
    ordered = tuple(points[k] for k in sorted(points))
    return StepsCurve(ordered, basis if isinstance(basis, dict) else {}), None


def _point(entry: Any) -> StepsPoint | None:
    if not isinstance(entry, dict) or not _positive_int(entry.get("steps")):
        return None
    rmse, seconds = entry.get("rmse_hu"), entry.get("seconds_per_slice")
    if rmse is not None and not (_number(rmse) and rmse >= 0):
        return None
    if seconds is not None and not (_number(seconds) and seconds >= 0):
        return None
    return StepsPoint(
        int(entry["steps"]),
        None if rmse is None else float(rmse),
        None if seconds is None else float(seconds),
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"


@dataclass(frozen=True)
class StepsChoice:
    """The steps a run uses, how they were chosen, and the one line that says so."""

    steps: int
    how: str  # "auto" (from the curve), "given", or "configured" (the model's own)
    reason: str  # why these steps, e.g. "as given"
    curve: StepsCurve | None = None

    @property
    def note(self) -> str:
        """'2 steps (auto: the fewest within ...)': the line logs and panels show."""
        return f"{_count(self.steps)} ({'auto: ' if self.how == 'auto' else ''}{self.reason})"

    @property
    def count(self) -> str:
        """'2 steps'."""
        return _count(self.steps)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps, "how": self.how, "note": self.note}
        if self.curve is not None:
            out[CURVE_KEY] = [p.to_json() for p in self.curve.points]
        return out


def parse_steps(value: Any) -> int | str | None:
    """``--steps`` as typed: 'auto', a positive integer, or None (the model's configured)."""
    if value is None or _positive_int(value):
        return value if value is None else int(value)
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise InputError(
            f"--steps must be 'auto' or a positive number of sampler steps, got {value!r}"
        )
    return number


def configured_steps(meta: Mapping[str, Any]) -> int | None:
    """The steps the model was trained to sample with (``scheme.params.steps``)."""
    scheme = meta.get("scheme")
    params = scheme.get("params") if isinstance(scheme, dict) else None
    steps = params.get("steps") if isinstance(params, dict) else None
    return int(steps) if isinstance(steps, int) and _positive_int(steps) else None


def one_pass(meta: Mapping[str, Any]) -> bool:
    """A regressor (RED-CNN, the weak denoiser): one network call, no steps to choose."""
    scheme = meta.get("scheme")
    return isinstance(scheme, dict) and scheme.get("name") == "regression"


def choose_for_model(
    meta: Mapping[str, Any], requested: Any = AUTO, *, configured: int | None = None
) -> StepsChoice:
    """The steps to sample a model with, given ``--steps`` (``requested``).

    ``requested``: 'auto' (the curve's choice), a positive integer (used as given), or
    None (the model's configured steps, the engine API's historical default).
    ``configured`` defaults to ``model.json``'s scheme steps (the loaded scheme knows it
    exactly; pass it when at hand).
    """
    wanted = parse_steps(requested)
    own = configured if configured is not None else configured_steps(meta)
    if own is None:
        own = 1 if one_pass(meta) else 10
    if isinstance(wanted, int):
        return StepsChoice(wanted, "given", "as given")
    if wanted is None:
        return StepsChoice(own, "configured", "the model's configured steps")
    if one_pass(meta):
        return StepsChoice(own, "configured", "a one-pass model")
    curve, problem = read_curve(meta)
    chosen = choose_steps(curve.points) if curve is not None else None
    if curve is None or chosen is None:
        why = problem or "its steps curve holds no finite error (training diverged?)"
        return StepsChoice(own, "configured", f"the model's configured steps, since {why}")
    best = min(
        (p for p in curve.points if p.rmse_hu is not None and math.isfinite(p.rmse_hu)),
        key=lambda p: float(p.rmse_hu or 0.0),
    )
    assert best.rmse_hu is not None
    reason = (
        f"the fewest within {tolerance_hu(best.rmse_hu):.1f} HU of the best validation "
        f"RMSE, {best.rmse_hu:.1f} HU at {_count(best.steps)}"
    )
    return StepsChoice(chosen, "auto", reason, curve)


def _count(steps: int) -> str:
    return f"{steps} step{'s' if steps != 1 else ''}"
