"""Screenshots of both panels' results for the Extension Index, drawn from a real MRML scene.

``python -m ipv2.benchmarks.screenshots --out Resources/Screenshots`` writes

- ``IPv2Denoise-masks.png``: a uLDCT slice in the lung window under the panel's
  "Masks for all slices" segmentation (lung red, the body's outline green);
- ``IPv2Denoise-compare.png``: uLDCT, NDCT and the third volume of the panel's compare
  layout: the IPv2 training input preview, or with ``--model M`` the denoised volume;
- ``IPv2Train-curve.png``: the training curve the panel plots, from the MRML table a
  short real training run fills.

Every image is made by the panels' own logic on slicer-core's MRML (the masks come back
out of the segmentation node, the volumes out of their volume nodes, the curve out of
its table node), so a screenshot shows what the code does, not a mock-up; only the
drawing of the slice views (a lung-window image per view) is done here with Pillow,
since Slicer's views need the application. The data is the synthetic phantom, made
here: nothing is downloaded or copied.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ipv2.benchmarks.mask_montage import PANEL, grid, overlay, save

FOOTER = (
    "IPv2 for 3D Slicer - synthetic chest phantom ({size} px), panel logic on a real MRML scene"
)


def _panel(u_node: Any, n_node: Any, model: Path | None) -> Any:
    from ipv2.slicer.denoise_logic import panel_values

    return panel_values(
        u_node, n_node, modelPath=model or Path(), device="cpu", halfPrecision=False
    )


def _logic() -> Any:
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin
    from ipv2.slicer.dicom_export import DicomExportMixin

    class Logic(DenoiseLogicMixin, DicomExportMixin):
        pass

    return Logic()


def _finish(task: Any, timeout: float = 900.0) -> Any:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        view = task.poll()
        if view.outcome is not None:
            if view.outcome.node is None:
                raise RuntimeError(f"{view.outcome.message}\n{view.outcome.details}")
            return view.outcome.node
        time.sleep(0.1)
    task.close()
    raise RuntimeError(f"{task.title} did not finish in {timeout:.0f} s")


def denoise_screenshots(
    out: Path, *, size: int = 256, slices: int = 6, model: Path | None = None
) -> list[Path]:
    """The mask overlay and the compare layout of one phantom slice."""
    from ipv2.phantom import make_phantom
    from ipv2.slicer import node_from_volume, volume_from_node
    from ipv2.slicer.segments import segment_array

    case = make_phantom(size, slices, seed=0)
    u_node = node_from_volume(case.uldct, "chest uLDCT")
    n_node = node_from_volume(case.ndct, "chest NDCT")
    logic = _logic()
    p = _panel(u_node, n_node, model)
    k = slices // 2
    segmentation = logic.wholeVolumeMasks(p)
    u = volume_from_node(u_node).array[k]
    lung = segment_array(segmentation, "lung", u_node)[k]
    body = segment_array(segmentation, "body", u_node)[k] | lung
    footer = FOOTER.format(size=size)
    masks = grid(
        [
            [
                ("uLDCT, lung window", overlay(u, np.zeros_like(lung), None)),
                ("IPv2 masks: lung (red), body outline (green)", overlay(u, lung, body)),
            ]
        ],
        footer,
    )
    if model is not None:  # the whole series, slice k shown
        third = volume_from_node(_finish(logic.startDenoise(p))).array[k]
        title = f"IPv2 denoised ({model.name})"
    else:  # the preview holds slice k alone
        third = volume_from_node(_finish(logic.previewFusion(p, k))).array[0]
        title = "IPv2 training input (preview)"
    n = volume_from_node(n_node).array[k]
    none = np.zeros_like(lung)
    compare = grid(
        [
            [
                ("uLDCT", overlay(u, none, None)),
                ("NDCT", overlay(n, none, None)),
                (title, overlay(third, none, None)),
            ]
        ],
        footer,
    )
    out.mkdir(parents=True, exist_ok=True)
    return [
        save(masks, out / "IPv2Denoise-masks.png"),
        save(compare, out / "IPv2Denoise-compare.png"),
    ]


def train_screenshot(out: Path, *, steps: int = 60, work: Path | None = None) -> Path:
    """The training curve of a short real run on phantom pairs, as the panel's chart shows it."""
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe
    from ipv2.runtime.jobs import read_event_log
    from ipv2.slicer.curves import PLOTTED, TrainingCurve
    from ipv2.slicer.selftest import write_phantom_pairs
    from ipv2.training import TrainConfig, train

    root = Path(tempfile.mkdtemp(prefix="ipv2-shots-", dir=work))
    pairs = write_phantom_pairs(root / "pairs", ("train", "val"), size=64, slices=2)
    build_dataset(pairs, root / "ds", BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    config = TrainConfig(
        data=str(root / "ds"),
        output=str(root / "run"),
        model="ffm",
        model_params={"base": 8, "mults": [1, 2]},
        crop=32,
        max_steps=steps,
        val_every=1,
        device="cpu",
    )
    train(config)
    curve = TrainingCurve("IPv2 training")
    curve.add(read_event_log(root / "run" / "events.jsonl"))
    image = plot_curve(curve.rows(), {name: PLOTTED[name] for name in PLOTTED})
    out.mkdir(parents=True, exist_ok=True)
    return save(image, out / "IPv2Train-curve.png")


def plot_curve(
    rows: list[dict[str, float]], series: dict[str, tuple[float, float, float]]
) -> Image.Image:
    """The chart's scatter series on a log y axis (what vtkMRMLPlotChartNode is set to)."""
    width, height, margin = 2 * PANEL, PANEL, 48
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = {
        name: [(r["step"], r[name]) for r in rows if math.isfinite(r[name]) and r[name] > 0]
        for name in series
    }
    values = [v for pts in points.values() for _, v in pts]
    steps = [s for pts in points.values() for s, _ in pts]
    if not values:
        raise ValueError("the training curve has no points to draw")
    low, high = math.log10(min(values)), math.log10(max(values))
    high = high if high > low else low + 1.0
    last = max(steps) or 1.0

    def xy(step: float, value: float) -> tuple[float, float]:
        x = margin + (width - 2 * margin) * step / last
        y = height - margin - (height - 2 * margin) * (math.log10(value) - low) / (high - low)
        return x, y

    draw.rectangle((margin, margin, width - margin, height - margin), outline="black")
    draw.text((margin, 12), "IPv2 training: loss and validation MAE (HU), log scale", fill="black")
    draw.text((width // 2 - 12, height - margin + 16), "step", fill="black")
    draw.text((margin, height - margin + 4), "0", fill="black")
    draw.text((width - margin - 12, height - margin + 4), f"{last:.0f}", fill="black")
    draw.text((4, margin - 6), f"{10**high:.3g}", fill="black")
    draw.text((4, height - margin - 6), f"{10**low:.3g}", fill="black")
    for i, (name, colour) in enumerate(series.items()):
        rgb = tuple(int(255 * c) for c in colour)
        for step, value in points[name]:
            x, y = xy(step, value)
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=rgb)
        draw.text((margin + 8, height // 2 - 14 + 14 * i), name, fill=rgb)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--model", type=Path, help="a trained model: show its denoised slice")
    parser.add_argument("--size", type=int, default=256, help="phantom size in pixels")
    parser.add_argument("--train-steps", type=int, default=60, help="steps of the curve's run")
    args = parser.parse_args(argv)
    import slicer

    slicer.mrmlScene = slicer.vtkMRMLScene()  # a real scene, as the application has
    written = denoise_screenshots(args.out, size=args.size, model=args.model)
    written.append(train_screenshot(args.out, steps=args.train_steps))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
