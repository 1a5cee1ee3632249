"""Writing phantom cases to disk: volumes, true masks and a lung-window preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ipv2.core.hu_window import LUNG_DISPLAY_WINDOW
from ipv2.io.atomic import write_json_atomic
from ipv2.io.volumes import write_volume
from ipv2.phantom.generate import PhantomCase

VOLUMES = ("ndct", "uldct", "clean_ref", "clean_ld")


def write_case(case: PhantomCase, folder: Path) -> list[Path]:
    """One folder per case: the four volumes, two label maps (0/1/2), a preview, a JSON."""
    folder.mkdir(parents=True, exist_ok=False)
    written = [write_volume(getattr(case, name), folder / f"{name}.nrrd") for name in VOLUMES]
    for phase, masks in (("ref", case.masks_ref), ("ld", case.masks_ld)):
        labels = case.clean_ref.with_array(masks.label_map())
        written.append(write_volume(labels, folder / f"labels_{phase}.nrrd", dtype="uint8"))
    written.append(write_png(folder / "preview.png", montage(case)))
    written.append(write_json_atomic(folder / "phantom.json", case.params))
    return written


def montage(case: PhantomCase, slices: int = 3) -> npt.NDArray[np.uint8]:
    """Rows of slices; columns clean_ref, clean_ld, ndct, uldct; lung window."""
    depth = case.clean_ref.depth
    picks = np.unique(np.linspace(0, depth - 1, min(slices, depth) + 2)[1:-1].round().astype(int))
    if picks.size == 0:
        picks = np.array([0])
    rows = [
        np.concatenate(
            [LUNG_DISPLAY_WINDOW.to_uint8(getattr(case, n).array[k]) for n in VOLUMES], axis=1
        )
        for k in picks
    ]
    return np.concatenate(rows, axis=0)


def write_png(path: Path, gray: npt.NDArray[np.uint8]) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(gray)), str(path))
    return path
