"""Before/after montages of the purification masks for ``docs/masks.md``.

``python -m ipv2.benchmarks.mask_montage --out docs/images`` writes:

- ``masks-a0001-gas-under-back.png``: real chest CT (TCIA Lung-PET-CT-Dx, subject
  Lung_Dx-A0001, CC BY 4.0), paper vs anatomical lung mask on slices with gas between the
  back and the table pad;
- ``masks-phantom.png``: the synthetic phantom, true lung vs paper vs anatomical;
- ``masks-noisy.png``: the same real slices after a simulated 0.5% dose, paper (opening
  radius 1 and 2) vs anatomical: noise specks labelled lung.

Lung window (W 1500, L -600); lung filled red, the body's outline green. The real series
is read from ``--data`` and never copied; without it the real-CT montages are skipped
with a note. Images are palette PNGs (< 300 KB each) so the repository stays small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage

from ipv2.purification.masks import MaskOptions, purification_masks

BoolArray = npt.NDArray[np.bool_]
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/tcia-lung-pet-ct-dx-A0001/dicom"
A0001_SLICES = (16, 19)  # gas under the back (issue 16): 180-270 px below row 420
CREDIT = "TCIA Lung-PET-CT-Dx A0001 (Li P. et al. 2020, doi:10.7937/TCIA.2020.NNC2-0461), CC BY 4.0"
PANEL = 340  # pixels a panel is drawn at


def lung_window(img: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """W 1500 / L -600: lungs, air and fat apart, as radiologists read noise."""
    return np.asarray(np.clip((img + 1350.0) / 1500.0, 0.0, 1.0) * 255.0, dtype=np.uint8)


def overlay(img: npt.NDArray[np.floating], lung: BoolArray, body: BoolArray | None) -> Image.Image:
    """The slice in the lung window, lung in translucent red, the body's outline green."""
    gray = lung_window(img).astype(np.float32)
    rgb = np.stack([gray, gray, gray], axis=-1)
    rgb[lung] = 0.45 * rgb[lung] + 0.55 * np.array([255.0, 30.0, 30.0])
    if body is not None:
        edge = body & ~ndimage.binary_erosion(body, iterations=2)
        rgb[edge] = (40.0, 220.0, 40.0)
    return Image.fromarray(rgb.astype(np.uint8)).resize((PANEL, PANEL), Image.Resampling.NEAREST)


def grid(rows: list[list[tuple[str, Image.Image]]], footer: str) -> Image.Image:
    """Panels in rows, each titled; a footer line (credit or setting) below."""
    head, foot = 22, 22
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (cols * PANEL, len(rows) * (PANEL + head) + foot), "white")
    draw = ImageDraw.Draw(out)
    for i, row in enumerate(rows):
        for j, (title, panel) in enumerate(row):
            x, y = j * PANEL, i * (PANEL + head)
            draw.text((x + 6, y + 5), title, fill="black")
            out.paste(panel, (x, y + head))
    draw.text((6, out.height - foot + 5), footer, fill="black")
    return out


def save(img: Image.Image, path: Path) -> Path:
    """A 128-colour palette PNG: CT greys and three overlay colours fit easily."""
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _lung_and_body(u: npt.NDArray[np.float32], options: MaskOptions) -> tuple[BoolArray, BoolArray]:
    m = purification_masks(u, u, options)
    return m.lung, m.body


def a0001_montage(vol: npt.NDArray[np.float32], out: Path) -> Path:
    """Paper vs anatomical on the slices with gas under the back (3D: slices 12-23),
    each with a zoom on the back (rows 360-480, columns 120-400)."""
    sub = vol[12:24]
    paper = _lung_and_body(sub, MaskOptions())
    ours = _lung_and_body(sub, MaskOptions(variant="anatomical"))
    back = (slice(360, 480), slice(120, 400))
    rows = []
    for k in A0001_SLICES:
        z = k - 12
        row = []
        for name, (lung, body) in (("paper", paper), ("anatomical", ours)):
            below = int(lung[z, 420:].sum())
            row.append(
                (
                    f"slice {k}: {name}, {below} px lung below row 420",
                    overlay(sub[z], lung[z], body[z]),
                )
            )
        for name, (lung, body) in (("paper", paper), ("anatomical", ours)):
            zoom = overlay(sub[z][back], lung[z][back], body[z][back])
            row.append((f"{name}: the back, zoomed", zoom.resize((PANEL, PANEL * 120 // 280))))
        rows.append(row)
    return save(grid(rows, CREDIT), out / "masks-a0001-gas-under-back.png")


def phantom_montage(out: Path, *, size: int = 256) -> Path:
    """Truth vs paper vs anatomical on the phantom (seed 3, 256 px, -2048 padding)."""
    from ipv2.phantom.generate import make_phantom

    case = make_phantom(size, 8, 3, padding_value=-2048.0)
    u, n = case.uldct.array, case.ndct.array
    truth = case.masks_ld.lung | case.masks_ref.lung
    paper = purification_masks(u, n, MaskOptions())
    ours = purification_masks(u, n, MaskOptions(variant="anatomical"))
    rows = []
    for k in (1, 5):
        rows.append(
            [
                (f"slice {k}: true lung", overlay(u[k], truth[k], None)),
                (
                    f"paper (Dice {_dice(paper.lung, truth):.4f})",
                    overlay(u[k], paper.lung[k], paper.body[k]),
                ),
                (
                    f"anatomical (Dice {_dice(ours.lung, truth):.4f})",
                    overlay(u[k], ours.lung[k], ours.body[k]),
                ),
            ]
        )
    footer = (
        f"IPv2 phantom, seed 3, {size} px, 2% dose uLDCT shown; L of the pair (U, N); "
        "Dice on 8 slices"
    )
    return save(grid(rows, footer), out / "masks-phantom.png")


def noisy_montage(vol: npt.NDArray[np.float32], out: Path, *, dose: float = 0.005) -> Path:
    """Real slices after a simulated very low dose: specks in fat and muscle."""
    from ipv2.core.volume import Volume
    from ipv2.simulation.params import PhysicsParams
    from ipv2.simulation.volume_sim import simulate_volume

    sub = Volume(np.ascontiguousarray(vol[14:22]))
    low, _ = simulate_volume(sub, PhysicsParams(dose_fraction=dose), seed=0)
    u = low.array
    variants = (
        ("paper, opening 1", MaskOptions()),
        ("paper, opening 2", MaskOptions(opening_radius=2)),
        ("anatomical", MaskOptions(variant="anatomical")),
    )
    z = 4  # slice 18
    clean = purification_masks(sub.array, sub.array, MaskOptions(variant="anatomical")).lung
    lungs = ndimage.binary_dilation(clean[z], iterations=3)  # the routine-dose lungs
    row = []
    for title, options in variants:
        lung, body = _lung_and_body(u, options)
        specks = ndimage.label(lung[z] & ~lungs, structure=np.ones((3, 3), dtype=bool))[1]
        row.append((f"{title}: {specks} pieces outside the lungs", overlay(u[z], lung[z], body[z])))
    footer = f"slice 18 at {100 * dose:g}% simulated dose. {CREDIT}"
    return save(grid([row], footer), out / "masks-noisy.png")


def _dice(a: BoolArray, b: BoolArray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="A0001 DICOM folder")
    parser.add_argument("--phantom-size", type=int, default=256, help="phantom pixels across")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [phantom_montage(args.out, size=args.phantom_size)]
    if args.data.is_dir():
        from ipv2.io.volumes import read_volume

        vol = read_volume(str(args.data)).array
        written += [a0001_montage(vol, args.out), noisy_montage(vol, args.out)]
    else:
        print(f"real-CT montages skipped: {args.data} is absent", file=sys.stderr)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
