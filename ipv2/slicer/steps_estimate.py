"""The IPv2Denoise panel's line on sampler steps: which it will use and how long it should take.

Before a radiologist starts a run the panel says how many steps the model will sample
with (``--steps auto`` picks them from the steps curve measured at the end of training,
:mod:`ipv2.inference.steps_auto`; a number in the Steps box overrides it) and the time
that curve predicts per slice and for the selected series. The curve's seconds were
measured on the training device at batch size 1, so the line names that device and the
slice size they are scaled from. Reads ``model.json`` and the volume node's dimensions
only: no PyTorch, no voxel copy, cheap enough to refresh on every parameter change. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipv2.core.errors import IPv2Error
from ipv2.inference.steps_auto import AUTO, StepsChoice, choose_for_model, read_curve
from ipv2.io.model_store import read_model_json
from ipv2.slicer.paths import optional_path


@dataclass(frozen=True)
class StepsEstimate:
    """The steps a run will take and the time the model's curve predicts for it."""

    choice: StepsChoice
    seconds_per_slice: float | None = None  # scaled to the series' slice size
    slices: int | None = None  # in the selected series
    measured_on: str = ""  # 'on cpu, 4 validation slices of 64x64'
    scaled_to: tuple[int, int] | None = None  # the series' slice size, when it differs

    @property
    def seconds_total(self) -> float | None:
        if self.seconds_per_slice is None or not self.slices:
            return None
        return self.seconds_per_slice * self.slices

    def text(self) -> str:
        """'Steps: 2 (auto: ...). Expected time: about 0.05 s per slice, 3 s for 64 slices
        (measured in training on cpu, ...).'"""
        line = f"Steps: {self.choice.note}."
        if self.seconds_per_slice is None:
            return line
        total = self.seconds_total
        series = f", {_duration(total)} for these {self.slices} slices" if total else ""
        basis = f"measured in training {self.measured_on}" if self.measured_on else ""
        if self.scaled_to is not None:
            basis += f"{'; ' if basis else ''}scaled to {self.scaled_to[0]}x{self.scaled_to[1]}"
        basis = f" ({basis})" if basis else ""
        return (
            f"{line} Expected time: about {_duration(self.seconds_per_slice)} per slice"
            f"{series}{basis}."
        )


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    if seconds >= 1:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds * 1000:.3g} ms"


def _grid(node: Any) -> tuple[tuple[int, int] | None, int | None]:
    """(slice shape (y, x), slice count) of a volume node, from its image dimensions."""
    image = node.GetImageData() if node is not None else None
    if image is None:
        return None, None
    x, y, z = image.GetDimensions()
    return (int(y), int(x)), int(z)


def steps_estimate(model_path: Any, steps: int = 0, volume_node: Any = None) -> StepsEstimate:
    """The estimate for the model folder ``model_path``; ``steps`` 0 means auto.

    Raises :class:`IPv2Error` for a folder that holds no readable model description.
    """
    chosen = optional_path(model_path)
    if chosen is None:
        raise IPv2Error("no model selected")
    folder = chosen.parent if chosen.is_file() else chosen
    meta = read_model_json(Path(folder))
    choice = choose_for_model(meta, int(steps) if steps else AUTO)
    curve = choice.curve if choice.curve is not None else read_curve(meta)[0]
    if curve is None:
        return StepsEstimate(choice)
    shape, slices = _grid(volume_node)
    measured = curve.slice_shape
    return StepsEstimate(
        choice,
        seconds_per_slice=curve.seconds_per_slice(choice.steps, shape),
        slices=slices,
        measured_on=curve.where(),
        scaled_to=shape
        if shape is not None and measured is not None and shape != measured
        else None,
    )


def steps_estimate_text(model_path: Any, steps: int = 0, volume_node: Any = None) -> str:
    """The panel's line; empty without a model, the problem for an unreadable one."""
    if optional_path(model_path) is None:
        return ""
    try:
        return steps_estimate(model_path, steps, volume_node).text()
    except (IPv2Error, OSError) as exc:
        return f"Steps: unknown ({exc})."
