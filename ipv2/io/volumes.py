"""Reading and writing volumes through SimpleITK, keeping geometry exactly.

Single-file formats only (NRRD, NIfTI, MHA) so that an output is one atomic file; DICOM
series folders are read-only. Every write goes to a temporary name beside the target and
is renamed into place (:func:`ipv2.io.atomic.atomic_file`), so an interrupted run never
leaves a half-written volume, and an existing file is never replaced unless the caller
asks for it. Every read vets the header first (:mod:`ipv2.io.volume_headers`: declared
size against the memory limit, data attached), and a folder that is not a DICOM series
is described (empty, PNG images, unreadable .dcm files) rather than merely refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.atomic import atomic_file
from ipv2.io.native_stderr import native_stderr_held
from ipv2.io.png_layout import is_png_layout
from ipv2.io.volume_headers import check_file_size, check_series_size, last_line, read_file_header

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


@contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's own WARNING lines (e.g. "No Series were found") for a probe.

    A probe that finds nothing is an expected outcome the caller explains in one line;
    ITK would print its warnings to stderr besides it. The previous setting is restored.
    """
    before = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(before)


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """All DICOM series in ``folder`` (not recursive), files sorted by slice position."""
    reader = sitk.ImageSeriesReader()
    out = []
    with _itk_warnings_off():
        uids = reader.GetGDCMSeriesIDs(str(folder))
        for uid in uids:
            files = tuple(reader.GetGDCMSeriesFileNames(str(folder), uid))
            desc = _series_description(files[0])
            out.append(DicomSeries(uid=uid, files=files, description=desc))
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
        raise InputError(_not_a_series(Path(folder)))
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
    check_series_size(chosen.files, f"DICOM series {chosen.label()}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    return _read_pixels(reader, f"DICOM series {chosen.label()}", source=str(folder))


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
    # Header first: the declared size is checked before any pixel memory is allocated.
    reader = read_file_header(p, suffix)
    _check_shape(str(p), dim=reader.GetDimension(), components=reader.GetNumberOfComponents())
    check_file_size(reader, str(p))
    return _read_pixels(reader, str(p), source=str(p))


def _read_pixels(
    reader: sitk.ImageFileReader | sitk.ImageSeriesReader, what: str, *, source: str
) -> Volume:
    """Execute a reader whose header passed, as a Volume; any failure is one line.

    What the C++ code prints meanwhile is held back and shown only when the volume
    was read (see :mod:`ipv2.io.native_stderr`).
    """
    try:
        with native_stderr_held() as held:
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {what}: {last_line(exc)}") from exc
    problem = held.failure()
    if problem:
        raise InputError(f"cannot read {what}: {problem}")
    volume = _from_image(image, source)
    held.replay()
    return volume


def _not_a_series(folder: Path) -> str:
    """Say what a folder that yields no DICOM series holds, and what to give instead."""
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    files = [e for e in entries if e.is_file()]
    examples = ", ".join(e.name for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
    if not entries:
        return f"folder {folder} is empty; give {_supported()}"
    if any(f.suffix.lower() == ".png" for f in files) or is_png_layout(folder):
        return (
            f"folder {folder} holds PNG images; this command reads a volume file or a DICOM series "
            "(8-bit PNG slices carry no HU by themselves). For the authors' PNG layout "
            "(<root>/<split>/lq|gt) use ipv2 build-dataset ROOT with --png-window; "
            "ipv2 denoise and ipv2 evaluate read a folder of PNG slices"
        )
    volumes = [f for f in files if volume_suffix(f) is not None]
    if volumes:
        return (
            f"folder {folder} holds {len(volumes)} volume files ({examples}); give one "
            "volume file itself"
        )
    dcm = [f for f in files if f.suffix.lower() == ".dcm"]
    if dcm:
        return (
            f"folder {folder} holds {len(dcm)} .dcm files that are not readable DICOM ({examples}); "
            "check that they were copied completely, or export the series again"
        )
    if not files:
        return (
            f"folder {folder} holds only folders ({examples}), no files; give the folder that "
            "holds the DICOM series itself"
        )
    return (
        f"no DICOM series found in folder {folder}: its {len(files)} files ({examples}) are "
        f"not DICOM; give {_supported()}"
    )


def _check_shape(source: str, *, dim: int, components: int) -> None:
    """Scalar 2D or 3D only (checked from the header, again on the image read)."""
    if components != 1:
        raise InputError(
            f"{source} has {components} components per voxel; "
            "CT volumes are single-component (scalar)"
        )
    if dim not in (2, 3):
        raise InputError(
            f"{source} is a {dim}D image; CT volumes are 3D (or a single 2D slice). "
            "Split time series or multi-volume files first"
        )


def _from_image(image: sitk.Image, source: str) -> Volume:
    dim = image.GetDimension()
    _check_shape(source, dim=dim, components=image.GetNumberOfComponentsPerPixel())
    if dim == 2:
        spacing = (*image.GetSpacing(), 1.0)
        origin = (*image.GetOrigin(), 0.0)
        d2 = np.asarray(image.GetDirection()).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
        array = sitk.GetArrayFromImage(image)[np.newaxis]
    else:  # 3D: _check_shape allows nothing else
        spacing = image.GetSpacing()
        origin = image.GetOrigin()
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        array = sitk.GetArrayFromImage(image)
    try:
        return Volume(array.astype(np.float32), spacing, origin, direction=direction)
    except InputError as exc:  # geometry a damaged header made: one line naming the file
        raise InputError(f"{source}: {' '.join(str(exc).split())}") from exc


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
