"""Vetting a volume's header before any pixel data is read.

A header declares the size, type and location of the pixel data, and the readers trust
it when they allocate and open: a 200-byte NRRD can declare petabytes, or name
``/dev/stdin`` as its data file. Here the header alone is read (ITK's
``ReadImageInformation``, or the first bytes of the file) and refused in one line when
its pixel buffer exceeds :func:`ipv2.io.volume_limits.max_volume_bytes` or its data lives
in another file; only then does :mod:`ipv2.io.volumes` read the pixels. A DICOM series is
vetted file by file, since each slice is allocated from its own header.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from ipv2.core.errors import InputError
from ipv2.io.native_stderr import native_stderr_held
from ipv2.io.volume_limits import check_declared_size


def read_file_header(path: Path, suffix: str) -> sitk.ImageFileReader:
    """A reader holding ``path``'s image information, its data checked to be attached."""
    _check_attached_data(path, suffix)
    return _read_header(path)


def check_file_size(reader: sitk.ImageFileReader, source: str) -> None:
    """Refuse a file whose declared pixel buffer is above the limit (one line)."""
    check_declared_size(
        source,
        size=reader.GetSize(),
        bytes_per_pixel=_bytes_per_pixel(reader),
        unit=f"voxels of {_pixel_type(reader)}",
    )


_NRRD_DATA_FILE = re.compile(rb"^data ?file\s*:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_MHA_DATA_FILE = re.compile(rb"^ElementDataFile\s*=\s*(.*?)\s*$", re.MULTILINE)


def _check_attached_data(path: Path, suffix: str) -> None:
    """Refuse an NRRD or MHA header whose pixel data lives in another file.

    ipv2 reads single-file volumes; a header naming a data file elsewhere would make the
    reader open any path it names (another user's file, a device, a pipe that never
    ends). Only the header, at the start of the file, is looked at.
    """
    if suffix not in (".nrrd", ".mha"):
        return
    with open(path, "rb") as fh:
        head = fh.read(65536)
    named: bytes | None = None
    if suffix == ".nrrd":
        match = _NRRD_DATA_FILE.search(re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0])
        named = match[1] if match else None
    else:  # the first ElementDataFile line ends an MHA header
        match = _MHA_DATA_FILE.search(head)
        named = match[1] if match and match[1] != b"LOCAL" else None
    if named is not None:
        raise InputError(
            f"{path} keeps its pixel data in another file "
            f"({named.decode('utf-8', errors='replace')!r}); ipv2 reads single-file volumes "
            "with the data attached: save it again as one .nrrd, .nii.gz or .mha file"
        )


def last_line(exc: BaseException) -> str:
    """ITK messages span lines (file, line, class); the last one says what went wrong."""
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else type(exc).__name__


def _read_header(path: Path) -> sitk.ImageFileReader:
    """A reader that has read ``path``'s image information (size, type), no pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with native_stderr_held() as held:  # shown again, if at all, by the pixel read
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: {last_line(exc)}") from exc
    problem = held.failure()
    if problem:
        raise InputError(f"cannot read {path}: {problem}")
    return reader


def _pixel_type(reader: sitk.ImageFileReader) -> str:
    """E.g. "16-bit signed integer" ("vector of ..." for several components)."""
    return str(sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def _bytes_per_pixel(reader: sitk.ImageFileReader) -> int:
    """Bytes one pixel takes in the reader's buffer, from the declared pixel type."""
    name = _pixel_type(reader)
    bits = re.search(r"(\d+)-bit", name)
    per_component = int(bits[1]) // 8 if bits else 8  # unknown: assume the widest
    if "complex" in name:
        per_component *= 2
    return max(per_component, 1) * max(int(reader.GetNumberOfComponents()), 1)


def check_series_size(files: Sequence[str], label: str) -> None:
    """Every file's declared rows x columns, times the file count, within the limit.

    The series reader allocates the whole stack from the first file and then each slice
    from its own header, so one hostile file anywhere in the folder is enough: all
    headers are read (a few milliseconds each) before any pixel data.
    """
    widest: tuple[int, tuple[int, ...], sitk.ImageFileReader] | None = None
    for name in files:
        reader = _read_header(Path(name))
        size = tuple(int(s) for s in reader.GetSize())
        need = math.prod(size) * _bytes_per_pixel(reader)
        if widest is None or need > widest[0]:
            widest = (need, size, reader)
    if widest is None:
        return
    _, size, reader = widest
    frames = size[2] if len(size) > 2 else 1
    check_declared_size(
        label,
        size=(size[0], size[1], frames * len(files)),
        bytes_per_pixel=_bytes_per_pixel(reader),
        unit=f"voxels of {_pixel_type(reader)} (columns x rows x slices)",
    )
