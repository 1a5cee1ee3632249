"""The demo's report: ``report.png`` (a figure like the paper's Figure 1) and ``report.html``.

Columns show one test slice in the lung window: uLDCT, NDCT, the IPv1 and IPv2 labels,
the outputs of the IPv1- and IPv2-trained models, and the masks. The second and third
rows magnify a background patch and a lung patch (boxed in the first row), where IPv1
and IPv2 differ.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage

from ipv2.core.hu_window import LUNG_DISPLAY_WINDOW, HUWindow
from ipv2.core.volume import Volume
from ipv2.demo.config import model_title
from ipv2.phantom import PhantomCase

U8 = npt.NDArray[np.uint8]
SCALE = 2  # display pixels per image pixel
BG_BOX, LUNG_BOX = (80, 160, 255), (255, 200, 40)
MASK_COLOURS = {0: (40, 70, 150), 1: (215, 180, 140), 2: (235, 90, 110)}
SOFT_TISSUE_WINDOW = HUWindow(40.0 - 200.0, 40.0 + 200.0)  # W400 L40: chest wall, mediastinum
DIFFERENCE_HU = 200.0  # output - truth shown from -200 (black) through 0 (grey) to +200 (white)
DIFFERENCE_WINDOW = HUWindow(-DIFFERENCE_HU, DIFFERENCE_HU)


def _gray(slice_hu: npt.NDArray[np.float32]) -> U8:
    return LUNG_DISPLAY_WINDOW.to_uint8(slice_hu)


def _boxes(case: PhantomCase, k: int) -> dict[str, tuple[int, int, int]]:
    """(row, col, size) of a background patch and a lung patch on slice ``k``."""
    n = case.uldct.shape[1]
    side = max(8, n // 4)
    bg = case.masks_ld.background[k]
    candidates = [(2, 2), (2, (n - side) // 2), (2, n - side - 2), (n - side - 2, 2)]
    r0, c0 = max(candidates, key=lambda rc: bg[rc[0] : rc[0] + side, rc[1] : rc[1] + side].mean())
    labels, count = ndimage.label(case.masks_ld.lung[k])
    if count:
        biggest = 1 + int(
            np.argmax(ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1)))
        )
        cy, cx = (int(v) for v in ndimage.center_of_mass(labels == biggest))
    else:
        cy, cx = n // 2, n // 4
    half = side // 2
    r1 = int(np.clip(cy - half, 0, n - side))
    c1 = int(np.clip(cx - half, 0, n - side))
    return {"background": (r0, c0, side), "lung": (r1, c1, side)}


def _panel(gray: U8, size: int) -> Image.Image:
    img = Image.fromarray(gray).convert("RGB")
    return img.resize((size, size), Image.Resampling.NEAREST)


def _mask_panel(case: PhantomCase, k: int) -> U8:
    labels = np.zeros(case.masks_ld.body[k].shape, np.uint8)
    labels[case.masks_ld.body[k]] = 1
    labels[case.masks_ld.lung[k]] = 2
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    for value, colour in MASK_COLOURS.items():
        rgb[labels == value] = colour
    return rgb


def figure(
    case: PhantomCase, outputs: dict[str, Volume], labels: dict[str, Any], *, k: int
) -> Image.Image:
    columns: list[tuple[str, U8]] = [
        ("uLDCT (2% dose)", _gray(case.uldct.array[k])),
        ("NDCT (other phase)", _gray(case.ndct.array[k])),
    ]
    for name in ("ipv1", "ipv2"):
        if name in labels:
            columns.append((f"{name.replace('ipv', 'IPv')} label", _gray(labels[name][k])))
    for name, out in outputs.items():
        columns.append((_title(name), _gray(out.array[k])))
    n = case.uldct.shape[1]
    size = n * SCALE
    boxes = _boxes(case, k)
    title_h, gap = 22, 4
    width = (len(columns) + 1) * (size + gap)
    height = title_h + 3 * (size + gap)
    canvas = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    for i, (title, gray) in enumerate(columns):
        x = i * (size + gap)
        draw.text((x + 4, 4), title, fill=(235, 235, 235))
        canvas.paste(_panel(gray, size), (x, title_h))
        for (r, c, s), colour in ((boxes["background"], BG_BOX), (boxes["lung"], LUNG_BOX)):
            draw.rectangle(
                [
                    x + c * SCALE,
                    title_h + r * SCALE,
                    x + (c + s) * SCALE,
                    title_h + (r + s) * SCALE,
                ],
                outline=colour,
                width=2,
            )
        for row, (r, c, s) in enumerate((boxes["background"], boxes["lung"]), start=1):
            patch = _panel(gray[r : r + s, c : c + s], size)
            canvas.paste(patch, (x, title_h + row * (size + gap)))
    x = len(columns) * (size + gap)
    draw.text((x + 4, 4), "masks (truth)", fill=(235, 235, 235))
    canvas.paste(
        Image.fromarray(_mask_panel(case, k)).resize((size, size), Image.Resampling.NEAREST),
        (x, title_h),
    )
    legend = [("background zoom", BG_BOX), ("lung zoom", LUNG_BOX)]
    for j, (text, colour) in enumerate(legend):
        y = title_h + (j + 1) * (size + gap) + 8
        draw.rectangle([x + 8, y, x + 24, y + 16], outline=colour, width=2)
        draw.text((x + 32, y + 2), text, fill=(235, 235, 235))
    return canvas


def difference_figure(case: PhantomCase, outputs: dict[str, Volume], *, k: int) -> Image.Image:
    """Soft-tissue window (top) and output - truth (bottom) for the input and each model.

    The lung window of :func:`figure` hides what happens in the body; here a body-wide
    bias shows as a grey level off mid-grey and a dark rim along the outline as a black
    ring, so a regression in any region is visible at a glance.
    """
    truth = case.clean_ld.array[k]
    columns = [("uLDCT (input)", case.uldct.array[k])]
    columns += [(_title(name), out.array[k]) for name, out in outputs.items()]
    columns.append(("truth", truth))
    size = case.uldct.shape[1] * SCALE
    title_h, gap = 22, 4
    canvas = Image.new("RGB", (len(columns) * (size + gap), title_h + 2 * (size + gap) + 18))
    draw = ImageDraw.Draw(canvas)
    for i, (title, image) in enumerate(columns):
        x = i * (size + gap)
        draw.text((x + 4, 4), title, fill=(235, 235, 235))
        canvas.paste(_panel(SOFT_TISSUE_WINDOW.to_uint8(image), size), (x, title_h))
        if title != "truth":
            diff = DIFFERENCE_WINDOW.to_uint8(image - truth)
            canvas.paste(_panel(diff, size), (x, title_h + size + gap))
    draw.text(
        (4, title_h + 2 * (size + gap)),
        f"top: W400 L40; bottom: output - truth, -{DIFFERENCE_HU:.0f} (black) .. "
        f"+{DIFFERENCE_HU:.0f} HU (white), 0 = mid-grey",
        fill=(235, 235, 235),
    )
    return canvas


def _title(name: str) -> str:
    return model_title(name).replace("ipv", "IPv")


def _best_slice(case: PhantomCase) -> int:
    return int(np.argmax(case.masks_ld.lung.sum(axis=(1, 2))))


def write_report(
    root: Path,
    case: PhantomCase,
    outputs: dict[str, Volume],
    *,
    labels: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    k = _best_slice(case)
    figure(case, outputs, labels, k=k).save(root / "report.png")
    difference_figure(case, outputs, k=k).save(root / "report-difference.png")
    (root / "report.html").write_text(_html(metrics, k), encoding="utf-8")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def _html(metrics: dict[str, Any], k: int) -> str:
    rows = metrics["rows"]
    keys = ["noise_background_hu", "noise_lung_hu", "psnr", "ssim"]
    extra = sorted(
        {key for row in rows.values() for key in row if key.startswith(("psnr_vs", "ssim_vs"))}
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *keys, *extra])
    body = "".join(
        "<tr><th>"
        + html.escape(name)
        + "</th>"
        + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in [*keys, *extra])
        + "</tr>"
        for name, row in rows.items()
    )
    comp = metrics["comparison"]
    regions = _region_table(rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>IPv2 demo report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}td,th{{padding:4px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f2f2f2}}img{{max-width:100%}}</style></head>
<body><h1>IPv2 demo: IPv1 versus IPv2 purification on the ground-truth phantom</h1>
<p>The same FFM network was trained for the same number of steps on IPv1- and IPv2-purified
data built from the same phantom patients, then denoised the test patient's 2% dose uLDCT.
Noise is the standard deviation of (output &minus; truth) in HU inside the true background
and lung regions; PSNR and SSIM are inside the body, in the HU window of the models.</p>
<p><b>Residual noise, IPv2 versus IPv1:</b> background {percent(comp["background_noise_reduction_ipv2_vs_ipv1"])}
lower, lungs {percent(comp["lung_noise_reduction_ipv2_vs_ipv1"])} lower.</p>
<table><tr>{head}</tr>{body}</table>
<h2>Error against the truth per region (HU)</h2>
<p>Bias is the mean of (output &minus; truth), RMSE its root mean square over the whole
region, noise its SD inside the eroded region; body excludes the lungs. A model should
beat the input's RMSE in every region.</p>
{regions}
{_checks_list(comp.get("fidelity_checks") or [])}
{_checks_list(comp.get("student_checks") or [], "Checks of the one-step student against its teacher (the IPv2-trained model)")}
<h2>Test slice {k} (lung window W1500 L&minus;600)</h2>
<p><img src="report.png" alt="uLDCT, NDCT, labels, model outputs and masks with zoomed patches"></p>
<h2>Test slice {k}: soft-tissue window W400 L40 and output &minus; truth</h2>
<p><img src="report-difference.png" alt="soft-tissue window and difference to the truth"></p>
<h2>Run</h2><pre>{html.escape(json.dumps({"config": metrics["config"], "stage_seconds": metrics["stage_seconds"], "total_seconds": metrics["total_seconds"]}, indent=2))}</pre>
<p>Phantom: the IPv2 engine's synthetic chest (no patient data). Method: Gong and Yu, IPv2
and arXiv:2510.07492.</p></body></html>
"""


def _region_table(rows: dict[str, Any]) -> str:
    from ipv2.metrics.reference import REGIONS

    head = (
        "<tr><th></th>"
        + "".join(f"<th colspan=3>{html.escape(r)}</th>" for r in REGIONS)
        + "</tr><tr><th></th>"
        + "<th>bias</th><th>RMSE</th><th>noise</th>" * len(REGIONS)
        + "</tr>"
    )
    body = "".join(
        "<tr><th>"
        + html.escape(name)
        + "</th>"
        + "".join(
            f"<td>{_fmt(row.get(f'{stat}_{region}_hu'))}</td>"
            for region in REGIONS
            for stat in ("bias", "rmse", "noise")
        )
        + "</tr>"
        for name, row in rows.items()
    )
    return f"<table>{head}{body}</table>"


def percent(value: float | None) -> str:
    """'42%' for a fraction, '–' when it could not be measured."""
    return "–" if value is None else f"{100 * value:.0f}%"


def _checks_list(
    checks: list[dict[str, Any]], title: str = "Fidelity checks of the IPv2-trained model"
) -> str:
    """Checks (ipv2.demo.checks, ipv2.demo.student) as a list: each bar, its figure, pass
    or FAIL."""
    if not checks:
        return ""
    items = "".join(
        f"<li>{'pass' if c.get('passed') else '<b>FAIL</b>'}: {html.escape(str(c.get('check')))}"
        f" ({html.escape(str(c.get('measured')))})</li>"
        for c in checks
    )
    return f"<h2>{html.escape(title)}</h2><ul>{items}</ul>"
