"""Reading and writing volumes through SimpleITK, keeping geometry exactly.

Single-file formats only (NRRD, NIfTI, MHA) so that an output is one atomic file; DICOM
series folders are read-only. Every write goes to a temporary name beside the target and
is renamed into place (:func:`ipv2.io.atomic.atomic_file`), so an interrupted run never
leaves a half-written volume, and an existing file is never replaced unless the caller
asks for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.atomic import atomic_file

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
_OUTPUT_DTYPES = {"float32": sitk.sitkFloat32, "int16": sitk.sitkInt16, "uint8": sitk.sitkUInt8}


def volume_suffix(path: Path) -> str | None:
    """The recognised volume suffix of ``path`` (".nii.gz" counts as one), or None."""
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _supported() -> str:
    return ", ".join(VOLUME_SUFFIXES) + " or a DICOM series folder"


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder."""

    uid: str
    files: tuple[str, ...]
    description: str

    def label(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.uid}{desc} ({len(self.files)} files)"


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """All DICOM series in ``folder`` (not recursive), files sorted by slice position."""
    reader = sitk.ImageSeriesReader()
    out = []
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(reader.GetGDCMSeriesFileNames(str(folder), uid))
        out.append(DicomSeries(uid=uid, files=files, description=_series_description(files[0])))
    return out


def _series_description(path: str) -> str:
    try:
        meta = sitk.ImageFileReader()
        meta.SetFileName(path)
        meta.ReadImageInformation()
        return meta.GetMetaData("0008|103e").strip() if meta.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """A DICOM series folder as HU (rescale slope and intercept applied by GDCM).

    A folder that holds several series is refused unless one is chosen, because silently
    picking one could denoise the wrong scan.
    """
    series = list_dicom_series(folder)
    if not series:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(s.label() for s in series)
            raise InputError(
                f"folder {folder} holds {len(series)} DICOM series: {listing}. "
                "Choose one with --series UID"
            )
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            raise InputError(
                f"series {series_uid} is not in {folder}; it holds: "
                + "; ".join(s.label() for s in series)
            )
        chosen = matches[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {chosen.label()}: {exc}") from exc
    return _from_image(image, str(folder))


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """A volume file (NRRD, NIfTI, MHA) or a DICOM series folder, in HU."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist; give a volume file ({_supported()})")
    if p.is_dir():
        return read_dicom_series(p, series_uid)
    suffix = volume_suffix(p)
    if suffix is None:
        hint = ""
        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            hint = (
                ". 8-bit images carry no HU by themselves: use the PNG dataset layout "
                "(<root>/<split>/lq|gt) with an explicit HU window"
            )
        raise InputError(f"{p.name}: unsupported file type; use {_supported()}{hint}")
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputError(f"cannot read {p}: {str(exc).strip().splitlines()[-1]}") from exc
    return _from_image(image, str(p))


def _from_image(image: sitk.Image, source: str) -> Volume:
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "CT volumes are single-component (scalar)"
        )
    if dim == 2:
        spacing = (*image.GetSpacing(), 1.0)
        origin = (*image.GetOrigin(), 0.0)
        d2 = np.asarray(image.GetDirection()).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
        array = sitk.GetArrayFromImage(image)[np.newaxis]
    elif dim == 3:
        spacing = image.GetSpacing()
        origin = image.GetOrigin()
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        array = sitk.GetArrayFromImage(image)
    else:
        raise InputError(
            f"{source} is a {dim}D image; CT volumes are 3D (or a single 2D slice). "
            "Split time series or multi-volume files first"
        )
    return Volume(array.astype(np.float32), spacing, origin, direction=direction)


def hu_as_int16(hu: np.ndarray) -> np.ndarray:
    """Round HU to int16, saturating instead of wrapping around (metal stays bright)."""
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def to_sitk(volume: Volume, dtype: str = "float32") -> sitk.Image:
    """A SimpleITK image with the volume's geometry: float32, rounded int16, or uint8 labels."""
    if dtype not in _OUTPUT_DTYPES:
        raise InputError(f"output dtype must be one of {sorted(_OUTPUT_DTYPES)}, got {dtype}")
    data = volume.array
    if dtype == "int16":
        data = hu_as_int16(data)
    elif dtype == "uint8":
        data = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    dtype: str = "float32",
    *,
    overwrite: bool = False,
) -> Path:
    """Write atomically; an existing file is kept unless ``overwrite`` is set."""
    p = Path(path)
    suffix = volume_suffix(p)
    if suffix is None:
        raise InputError(
            f"{p.name}: cannot write this type; use one of {', '.join(VOLUME_SUFFIXES)}"
        )
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists; choose another name or remove it first")
    if not p.parent.is_dir():
        raise InputError(f"output folder {p.parent} does not exist")
    image = to_sitk(volume, dtype)
    # The temporary name keeps the real suffix: SimpleITK picks the format from it.
    with atomic_file(p, suffix=suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
    return p
