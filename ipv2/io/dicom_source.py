"""The source DICOM series of a denoised volume: its headers, checked to lie on a regular grid.

A derived series must say where each of its slices came from and keep the patient and
study it belongs to, so writing one needs the source's per-slice headers, not only the
voxels SimpleITK returns. :func:`read_source_series` reads those headers (pixels are not
read) for the same files the volume reader uses, and refuses a series that cannot be
written back slice for slice: gantry tilt (slices sheared against their normal), missing
or duplicated slices (non-uniform spacing), mixed orientations or sizes, multi-frame
objects. SimpleITK would read such a series onto a regular grid anyway, placing slices
where they were not acquired; a derived series built from that would contradict its
source in the PACS.

pydicom is imported only here and in the writer, when DICOM output is asked for, so the
engine runs without it; :func:`pydicom_module` says how to install it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.io.volumes import DicomSeries, list_dicom_series

# Geometry tolerances, in mm (positions) and as cosines (orientation): well above the
# rounding of DS strings, far below any real tilt, gap or misregistration.
_POSITION_TOL_MM = 0.01
_ORIENTATION_TOL = 1e-4
_SPACING_REL_TOL = 0.01


def pydicom_module() -> ModuleType:
    """pydicom, or a one-line error saying how to get it (it is an optional extra)."""
    try:
        import pydicom
    except ImportError as exc:
        raise InputError(
            "DICOM output needs pydicom, which is not installed: "
            "pip install 'ipv2[dicom]' (or pip install 'pydicom>=2.4')"
        ) from exc
    return pydicom


@dataclass(frozen=True)
class SourceSeries:
    """One DICOM series' headers sorted along the slice normal, on a checked regular grid."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    headers: tuple[Any, ...]  # pydicom datasets without pixel data, same order as files
    positions: npt.NDArray[np.float64]  # (n, 3) Image Position (Patient), LPS mm
    row_cosines: npt.NDArray[np.float64]
    column_cosines: npt.NDArray[np.float64]

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        return np.cross(self.row_cosines, self.column_cosines)

    def slice_order(self, volume: Volume) -> list[int]:
        """For each slice k of ``volume``, the index of the source header at its position.

        Matching by position, not by file order, keeps the derived series right whatever
        order the volume reader sorted its files in; any disagreement between the
        volume's grid and the source's is an error, never a silent re-labelling.
        """
        what = f"the volume does not lie on the grid of source series {self.uid}"
        first = self.headers[0]
        if volume.depth != len(self.headers):
            raise InputError(f"{what}: {volume.depth} slices vs {len(self.headers)} files")
        rows, cols = int(first.Rows), int(first.Columns)
        if volume.shape[1:] != (rows, cols):
            raise InputError(f"{what}: slices {volume.shape[1:]} vs {rows} x {cols}")
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
        if not np.allclose(volume.spacing[:2], (col_mm, row_mm), rtol=0, atol=1e-4):
            raise InputError(f"{what}: pixel spacing {volume.spacing[:2]} vs {col_mm, row_mm}")
        in_plane = volume.direction[:, :2]
        expected = np.stack([self.row_cosines, self.column_cosines], axis=1)
        if not np.allclose(in_plane, expected, rtol=0, atol=_ORIENTATION_TOL):
            raise InputError(f"{what}: the slice orientations differ")
        step = volume.direction[:, 2] * volume.spacing[2]
        order = []
        for k in range(volume.depth):
            where = np.asarray(volume.origin) + k * step
            distance = np.linalg.norm(self.positions - where, axis=1)
            best = int(np.argmin(distance))
            if distance[best] > max(_POSITION_TOL_MM, 0.1 * volume.spacing[2]):
                raise InputError(f"{what}: no source slice at volume slice {k} ({where} mm)")
            order.append(best)
        if len(set(order)) != len(order):
            raise InputError(f"{what}: two volume slices map to one source slice")
        return order


def read_source_series(
    folder: str | os.PathLike[str], series_uid: str | None = None
) -> SourceSeries:
    """Headers of the series in ``folder`` the volume reader would read, checked slice by slice."""
    chosen = _choose(Path(folder), series_uid)
    pydicom = pydicom_module()
    headers = []
    for name in chosen.files:
        try:
            headers.append(pydicom.dcmread(name, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several types for a broken file
            raise InputError(f"cannot read DICOM header of {name}: {exc}") from exc
    rows, cols = _orientation(headers, chosen.uid)
    positions = np.array([_floats(h, "ImagePositionPatient", 3) for h in headers])
    normal = np.cross(rows, cols)
    order = np.argsort(positions @ normal, kind="stable")
    files = tuple(Path(chosen.files[i]) for i in order)
    headers = [headers[i] for i in order]
    positions = positions[order]
    _check_regular_grid(positions, normal, [h.get("InstanceNumber") for h in headers], chosen.uid)
    return SourceSeries(
        folder=Path(folder),
        uid=chosen.uid,
        files=files,
        headers=tuple(headers),
        positions=positions,
        row_cosines=rows,
        column_cosines=cols,
    )


def _choose(folder: Path, series_uid: str | None) -> DicomSeries:
    if not folder.is_dir():
        raise InputError(f"DICOM output needs a DICOM series folder as input, not {folder}")
    series = list_dicom_series(folder)
    if not series:
        raise InputError(f"no DICOM series found in folder {folder}")
    matches = [s for s in series if series_uid in (None, s.uid)]
    if len(matches) != 1:
        listing = "; ".join(s.label() for s in series)
        raise InputError(f"choose one series of {folder} with --series UID; it holds: {listing}")
    return matches[0]


def _floats(header: Any, keyword: str, count: int) -> npt.NDArray[np.float64]:
    value = header.get(keyword)
    if value is None or len(value) != count:
        raise InputError(
            f"{Path(str(header.filename)).name} lacks a valid {keyword}; a derived series "
            "needs each slice's position and orientation"
        )
    return np.array([float(v) for v in value])


def _orientation(
    headers: list[Any], uid: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Row and column direction cosines, required to be the same on every slice."""
    for h in headers:
        if int(h.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"series {uid} is a multi-frame (enhanced) DICOM object; DICOM output "
                "supports single-frame CT series (one file per slice)"
            )
    orientations = np.array([_floats(h, "ImageOrientationPatient", 6) for h in headers])
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_TOL:
        raise InputError(f"series {uid} mixes slice orientations; it is not one volume")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    spacings = {tuple(round(float(v), 6) for v in _floats(h, "PixelSpacing", 2)) for h in headers}
    if len(sizes) > 1 or len(spacings) > 1:
        raise InputError(f"series {uid} mixes slice sizes or pixel spacings: {sorted(sizes)}")
    return orientations[0, :3], orientations[0, 3:]


def _check_regular_grid(
    positions: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    numbers: list[Any],
    uid: str,
) -> None:
    """Refuse gantry tilt, duplicate and missing slices, naming the slices at fault."""
    if len(positions) < 2:
        return
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    across = np.linalg.norm(steps - along[:, np.newaxis] * normal, axis=1)

    def between(i: int) -> str:
        return f"instances {numbers[i]} and {numbers[i + 1]}"

    if along.min() < _POSITION_TOL_MM:
        i = int(np.argmin(along))
        raise InputError(
            f"series {uid} has two slices at the same position ({between(i)}); "
            "it mixes acquisitions or holds duplicates, so it is not one regular volume"
        )
    tilted = across > np.maximum(_POSITION_TOL_MM, _SPACING_REL_TOL * along)
    if tilted.any():
        i = int(np.argmax(across))
        angle = float(np.degrees(np.arctan2(across[i], along[i])))
        raise InputError(
            f"series {uid} has gantry tilt (slices step {angle:.1f} degrees off their "
            f"normal, {between(i)}); a derived series cannot keep this geometry. Resample "
            "it to a regular grid first (e.g. Slicer's DICOM loader regularises tilted "
            "series), then denoise the resampled volume"
        )
    median = float(np.median(along))
    irregular = np.abs(along - median) > np.maximum(_POSITION_TOL_MM, _SPACING_REL_TOL * median)
    if irregular.any():
        i = int(np.argmax(np.abs(along - median)))
        raise InputError(
            f"series {uid} has non-uniform slice spacing ({along[i]:.3g} mm between "
            f"{between(i)}, {median:.3g} mm elsewhere): a slice is missing or the series "
            "mixes acquisitions. Export the complete series from the PACS and try again"
        )
