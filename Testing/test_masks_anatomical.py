"""The ``anatomical`` lung mask (issue 16, item 5): what the paper's mask gets wrong on real CT.

Real data: TCIA Lung-PET-CT-Dx, subject Lung_Dx-A0001 (Li P. et al., 2020,
doi:10.7937/TCIA.2020.NNC2-0461), CC BY 4.0, read from ../shared/data when present; the
test skips with the reason when it is absent. The other cases are small synthetic
volumes built here (bowel gas, a table with air inside and -3024 padding, heavy noise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from ipv2.cli import build_parser
from ipv2.phantom.generate import make_phantom
from ipv2.purification.masks import MaskOptions, purification_masks

A0001 = Path(__file__).resolve().parents[2] / "shared/data/tcia-lung-pet-ct-dx-A0001/dicom"
PAPER, ANATOMICAL = MaskOptions(), MaskOptions(variant="anatomical")
BoolArray = npt.NDArray[np.bool_]


def _dice(a: BoolArray, b: BoolArray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _disk(shape: tuple[int, int], cy: float, cx: float, *, ry: float, rx: float) -> BoolArray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return np.asarray(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0)


def _chest(z: int = 12, size: int = 128) -> tuple[npt.NDArray[np.float32], BoolArray]:
    """Air, an oval body of soft tissue, two lungs on every slice but the last four."""
    vol = np.full((z, size, size), -1000.0, dtype=np.float32)
    lungs = np.zeros(vol.shape, dtype=bool)
    body = _disk((size, size), size * 0.5, size * 0.5, ry=size * 0.3, rx=size * 0.42)
    for k in range(z):
        vol[k][body] = 40.0
        if k < z - 4:
            lung = _disk((size, size), size * 0.47, size * 0.3, ry=size * 0.2, rx=size * 0.12)
            lung |= _disk((size, size), size * 0.47, size * 0.7, ry=size * 0.2, rx=size * 0.12)
            vol[k][lung] = -850.0
            lungs[k] = lung
    return vol, lungs


def _lung_of(vol: npt.ArrayLike, options: MaskOptions) -> BoolArray:
    return purification_masks(vol, vol, options).lung


@pytest.mark.parametrize(
    ("seed", "size", "padding"), [(0, 128, None), (1, 128, -3024.0), (3, 256, -2048.0)]
)
def test_phantom_lung_dice_not_below_the_paper_variant(
    seed: int, size: int, padding: float | None
) -> None:
    """Module 1's L (pair U, N) against the phantom's truth (label 2 = lung, both phases).

    Seed 3 at 256 px lost lung tips at the apex to face-only 3D connectivity and lung
    boundary to a radius-2 opening on its noisier apex slices (0.98213 vs the paper's
    0.98237); 26-connectivity and 150 HU per pixel of radius keep them.
    """
    case = make_phantom(size, 8, seed, padding_value=padding)
    truth = case.masks_ld.lung | case.masks_ref.lung
    u, n = case.uldct.array, case.ndct.array
    paper = _dice(purification_masks(u, n, PAPER).lung, truth)
    ours = _dice(purification_masks(u, n, ANATOMICAL).lung, truth)
    assert ours >= paper, (seed, ours, paper)
    assert ours > 0.95


def test_noise_specks_on_a_very_low_dose_image_are_not_lung() -> None:
    """Issue 16: on a very noisy low-dose image, noise specks in fat and muscle become
    small "lung" islands with the paper's mask (opening radius 1). The phantom's uLDCT at
    0.25% dose (noise index about 200 HU) has several per slice; the anatomical mask
    none: they are small 3D components apart from the lungs."""
    case = make_phantom(128, 6, 0, uldct_dose=0.0025)
    u = case.uldct.array
    near_lung = ndimage.binary_dilation(case.masks_ld.lung, iterations=2)

    def islands(options: MaskOptions) -> list[int]:
        lung = purification_masks(u, u, options).lung & ~near_lung
        eight = np.ones((3, 3), dtype=bool)
        return [int(ndimage.label(sl, structure=eight)[1]) for sl in lung]

    paper, ours = islands(PAPER), islands(ANATOMICAL)
    assert sum(paper) >= 2 * len(paper), paper  # what the issue reports
    assert max(ours) == 0, ours


def test_single_slice_fallback_drops_a_small_pocket_beside_small_lungs() -> None:
    """One 512 x 512 lung-base slice: the lungs are small (669 px each, so 5% of the
    largest is 33 px) and a 37-pixel gas pocket lies in the soft tissue below them. The
    footprint floor alone (20 px at radius 1) kept it; the fallback's minimum area scales
    with the matrix (100 px at 512) and drops it, and the lungs stay."""
    size = 512
    vol = np.full((1, size, size), -1000.0, dtype=np.float32)
    vol[0][_disk((size, size), 256, 256, ry=150, rx=215)] = 40.0
    lungs = _disk((size, size), 230, 170, ry=18, rx=12) | _disk(
        (size, size), 230, 342, ry=18, rx=12
    )
    pocket = _disk((size, size), 330, 256, ry=3.3, rx=3.5)
    assert pocket.sum() == 37
    vol[0][lungs] = -850.0
    vol[0][pocket] = -950.0
    lung = purification_masks(vol, vol, ANATOMICAL).lung[0]
    assert (lung & pocket).sum() == 0
    assert _dice(lung, lungs) > 0.95


def test_bowel_gas_below_the_lungs_is_not_lung() -> None:
    """Gas in the last (abdominal) slices, a separate 3D component, is dropped."""
    vol, lungs = _chest()
    gas = np.zeros(vol.shape, dtype=bool)
    gas[-3:] = _disk((128, 128), 70, 50, ry=8, rx=10)
    vol[gas] = -950.0
    assert (_lung_of(vol, PAPER) & gas).sum() > 300  # the paper calls it lung
    ours = _lung_of(vol, ANATOMICAL)
    assert (ours & gas).sum() == 0
    assert _dice(ours, lungs) > 0.97


def test_table_with_air_inside_and_scanner_padding_is_not_body_or_lung() -> None:
    """A bright table shell with air inside under the back, -3024 outside the circle."""
    vol, lungs = _chest()
    table = np.zeros(vol.shape[1:], dtype=bool)
    table[106:116, 8:120] = True
    air = np.zeros_like(table)
    air[108:114, 10:118] = True
    vol[:, table] = 300.0
    vol[:, air] = -1000.0
    vol[:, 103:106, 20:108] = -700.0  # a foam pad between the back and the table
    vol[:, 103:106, 60:62] = 40.0  # a strap of tissue-like density touching the back
    outside = ~_disk((128, 128), 64, 64, ry=64, rx=64)
    vol[:, outside] = -3024.0
    masks = purification_masks(vol, vol, ANATOMICAL)
    assert (masks.lung[:, air]).sum() == 0
    assert (masks.body[:, table & ~air]).sum() == 0  # the shell is not patient
    assert _dice(masks.lung, lungs) > 0.97


@pytest.mark.skipif(not A0001.is_dir(), reason=f"real CT series absent: {A0001}")
def test_a0001_gas_under_the_back_is_not_lung() -> None:
    """A0001: the paper's mask labels hundreds of pixels of gas under the back as lung
    (rows 420 and below lie behind the lungs, between the back and the table pad)."""
    from ipv2.io.volumes import read_volume

    vol = read_volume(str(A0001)).array[14:22]
    paper = purification_masks(vol, vol, PAPER).lung
    ours = purification_masks(vol, vol, ANATOMICAL).lung
    assert paper[:, 420:].sum(axis=(1, 2)).max() > 150  # what the issue reports
    assert ours[:, 420:].sum(axis=(1, 2)).max() == 0
    # The lungs themselves are kept: nearly all of the paper's lungs above row 420.
    assert (ours & paper).sum() >= 0.99 * paper[:, :420].sum()


def test_cli_lists_the_anatomical_variant() -> None:
    """purify and build-dataset offer the variant (their parsers, built in-process)."""
    parser = build_parser()
    for command in ("purify", "build-dataset"):
        args = parser.parse_args([*_required_args(command), "--mask-variant", "anatomical"])
        assert args.mask_variant == "anatomical"


def _required_args(command: str) -> list[str]:
    if command == "purify":
        return [command, "-U", "u.nrrd", "-N", "n.nrrd", "-o", "out"]
    return [command, "source", "-o", "out"]
