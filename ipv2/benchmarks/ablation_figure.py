"""The figure of docs/ablation.md: where the body outline moved, and what each training did there.

``python -m ipv2.benchmarks.ablation_figure --run DIR --out PNG`` reads a finished
ablation run (``python -m ipv2.benchmarks.ablation --out DIR``), denoises the test
patient's slice with the most outline band with the IPv1, paper-literal IPv2 and IPv2
models, and draws one row: the normal-dose slice with the band (background in exactly one
of U and N) in yellow, then each output minus the noise-free truth in a difference window
of +-200 HU (grey 0, white brighter, black darker than the truth). The literal mask's
model shows a dark rim along the outline; the aligned one does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from ipv2.benchmarks.mask_montage import PANEL, grid, lung_window, save
from ipv2.core.errors import InputError
from ipv2.purification.masks import purification_masks

DIFF_HU = 200.0  # difference window: -200 HU black, 0 grey, +200 HU white
MODELS = (
    ("ipv1", "IPv1 - truth"),
    ("ipv2-12-paper-L", "IPv2, paper's L - truth"),
    ("ipv2-12", "IPv2, L + outline band - truth"),
)


def _difference_panel(diff: npt.NDArray[np.floating]) -> Image.Image:
    gray = np.clip(128.0 + 127.0 * diff / DIFF_HU, 0.0, 255.0).astype(np.uint8)
    return Image.fromarray(gray).resize((PANEL, PANEL), Image.Resampling.NEAREST)


def _band_panel(ndct: npt.NDArray[np.floating], band: npt.NDArray[np.bool_]) -> Image.Image:
    gray = lung_window(ndct).astype(np.float32)
    rgb = np.stack([gray, gray, gray], axis=-1)
    rgb[band] = (255.0, 220.0, 0.0)
    return Image.fromarray(rgb.astype(np.uint8)).resize((PANEL, PANEL), Image.Resampling.NEAREST)


def draw(run: Path, out: Path) -> Path:
    """The figure from ablation run folder ``run`` into ``out`` (a palette PNG)."""
    from ipv2.inference.denoise import DenoiseOptions, denoise_array
    from ipv2.io.checkpoints import load_checkpoint
    from ipv2.io.volumes import read_volume
    from ipv2.training import latest_checkpoint

    cases = sorted(p for p in (run / "phantom").glob("case*") if p.is_dir())
    models = {name: latest_checkpoint(run / f"model-{name}") for name, _ in MODELS}
    missing = [name for name, found in models.items() if found is None]
    if not cases or missing:
        raise InputError(
            f"{run} is not a finished ablation run (no phantom cases or no checkpoint for "
            f"{', '.join(missing)}); run python -m ipv2.benchmarks.ablation --out {run} first"
        )
    test = cases[-1]  # the demo's test patient
    uldct = read_volume(test / "uldct.nrrd").array
    ndct = read_volume(test / "ndct.nrrd").array
    truth = read_volume(test / "clean_ld.nrrd").array
    band = purification_masks(uldct, ndct).outline_band
    z = int(np.argmax(band.sum(axis=(1, 2))))
    panels = [(f"N, slice {z}: outline band (yellow)", _band_panel(ndct[z], band[z]))]
    for name, title in MODELS:
        checkpoint = models[name]
        assert checkpoint is not None  # checked above
        loaded = load_checkpoint(checkpoint)
        output, _ = denoise_array(uldct[z : z + 1], loaded, DenoiseOptions(steps=None))
        panels.append((title, _difference_panel(output[0] - truth[z])))
    footer = f"differences in a window of +-{DIFF_HU:.0f} HU (grey = truth); phantom test patient"
    out.parent.mkdir(parents=True, exist_ok=True)
    return save(grid([panels], footer), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipv2.benchmarks.ablation_figure")
    parser.add_argument("--run", type=Path, required=True, help="a finished ablation folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.run, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
