"""Writing a denoised volume as a DICOM derived series of the series it came from.

A radiologist reads the result next to the original in a PACS viewer, so the new series
must join the original's patient and study (their identifying attributes are copied from
the source files), be recognisably derived (Image Type DERIVED\\SECONDARY, a Derivation
Description and Series Description naming IPv2, the model and the steps, a Source Image
Sequence pointing at each source instance), never be confused with it (new Series and
SOP Instance UIDs, another Series Number) and overlay it exactly (each slice keeps its
source slice's position, orientation, pixel spacing, thickness and frame of reference).

Only a whitelist of source attributes is copied: private tags, overlays, icons and pixel
statistics of the source would be wrong or misleading on new pixels. Voxels are stored
as signed 16-bit integers with the source slice's Rescale Slope and Intercept
(HU = slope * stored + intercept), so the output has the source's HU precision. pydicom
does all the encoding. The folder appears complete or not at all; see
:func:`check_output_folder` for what may be replaced.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ipv2 import __version__
from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.atomic import publish_permissions, write_json_atomic
from ipv2.io.dicom_source import SourceSeries, pydicom_module

SIDECAR_NAME = "denoise.json"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# Series numbers of derived series: the source's plus this, so they sort after it.
SERIES_NUMBER_OFFSET = 1000

# Copied from each source slice when present. Grouped by DICOM module so a reviewer can
# check them against PS3.3: identity (Patient, General Study, Patient Study), where the
# slice lies (Frame of Reference, Image Plane), how it was acquired (General Equipment,
# General Series, CT Image acquisition attributes) and how to display it (VOI LUT).
_PATIENT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
_STUDY = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
)
_PLACEMENT = (
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    "InstanceNumber",
)
_ACQUISITION = (
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "Manufacturer",
    "InstitutionName",
    "StationName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "BodyPartExamined",
    "PatientPosition",
    "Laterality",
    "ProtocolName",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionNumber",
    "ScanOptions",
    "KVP",
    "DataCollectionDiameter",
    "ReconstructionDiameter",
    "GantryDetectorTilt",
    "TableHeight",
    "RotationDirection",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "FilterType",
    "ConvolutionKernel",
    "SpiralPitchFactor",
    "CTDIvol",
    "ContrastBolusAgent",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "LongitudinalTemporalInformationModified",
)
_DISPLAY = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")
COPIED_ATTRIBUTES = _PATIENT + _STUDY + _PLACEMENT + _ACQUISITION + _DISPLAY


@dataclass(frozen=True)
class Derivation:
    """What made the derived series; it names them in the DICOM descriptions."""

    model: str
    arch: str
    steps: int

    def series_description(self) -> str:
        # LO: at most 64 characters; a long model name is cut, the rest stays readable.
        text = f"IPv2 denoised ({self.arch}, {self._steps()}) {self.model}"
        return text[:64].rstrip()

    def derivation_description(self, source_uid: str) -> str:
        return (
            f"Denoised by IPv2 {__version__} (ultra-low-dose CT denoising, research "
            f"software) with model '{self.model}' ({self.arch}), {self._steps()} of the "
            f"sampler, from series {source_uid}"
        )[:1024]

    def _steps(self) -> str:
        return f"{self.steps} step" + ("" if self.steps == 1 else "s")


@dataclass(frozen=True)
class WrittenSeries:
    """Where the derived series went and what identifies it."""

    folder: Path
    series_uid: str
    files: tuple[Path, ...]


def check_output_folder(
    out: str | os.PathLike[str], *, source_folder: str | os.PathLike[str], overwrite: bool
) -> Path:
    """Refuse an output folder that would lose data; return it otherwise.

    The input is never written into or replaced (nor a folder that contains it). An
    existing folder with content is refused, except with ``overwrite`` when it is an
    earlier IPv2 DICOM output (only .dcm files and this writer's sidecar): a user's
    other folder is never emptied by a mistyped --out.
    """
    target = Path(out)
    resolved, source = target.resolve(), Path(source_folder).resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise InputError(
            f"--out {target} would write into or over the input series {source}; "
            "choose a separate folder"
        )
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; choose a new folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"output folder {target} is not empty; choose a new folder, or pass "
                "--overwrite to replace a DICOM series IPv2 wrote there before"
            )
        foreign = sorted(
            p.name
            for p in target.iterdir()
            if not (p.is_file() and (p.suffix.lower() == ".dcm" or p.name == SIDECAR_NAME))
        )
        if foreign or not (target / SIDECAR_NAME).is_file():
            what = f"holds {foreign[0]}" if foreign else f"has no {SIDECAR_NAME}"
            raise OutputExistsError(
                f"--overwrite refused: {target} {what}, so it is not an earlier IPv2 DICOM "
                "output; choose a new folder (nothing was written)"
            )
    if not target.parent.is_dir():
        raise InputError(
            f"cannot create {target}: its parent folder {target.parent} does not exist"
        )
    return target


def write_derived_series(
    volume: Volume,
    source: SourceSeries,
    out: str | os.PathLike[str],
    *,
    derivation: Derivation,
    overwrite: bool = False,
    sidecar: Mapping[str, Any] | None = None,
) -> WrittenSeries:
    """Write ``volume`` (HU, on the source's grid) as a derived series in folder ``out``.

    ``sidecar``, when given, is written as ``denoise.json`` beside the instances (with
    the new series UID added), inside the same atomic rename.
    """
    final = check_output_folder(out, source_folder=source.folder, overwrite=overwrite)
    order = source.slice_order(volume)
    pydicom = pydicom_module()
    series_uid = str(pydicom.uid.generate_uid())
    now = datetime.now()
    shared = {
        "SeriesInstanceUID": series_uid,
        "SeriesNumber": _series_number(source.headers[0]),
        "SeriesDescription": derivation.series_description(),
        "DerivationDescription": derivation.derivation_description(source.uid),
        "SeriesDate": now.strftime("%Y%m%d"),
        "SeriesTime": now.strftime("%H%M%S"),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        files = []
        for k, index in enumerate(order):
            ds = _instance(source.headers[index], volume.array[k], shared, now)
            files.append(tmp / f"IPv2_{k + 1:04d}.dcm")
            _save(pydicom, ds, files[-1])
        if sidecar is not None:
            extra = {"output": str(final), "format": "dicom", "series_instance_uid": series_uid}
            write_json_atomic(tmp / SIDECAR_NAME, {**sidecar, **extra})
        publish_permissions(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WrittenSeries(final, series_uid, tuple(final / f.name for f in files))


def _series_number(header: Any) -> int:
    try:
        return int(header.get("SeriesNumber")) + SERIES_NUMBER_OFFSET
    except (TypeError, ValueError):
        return SERIES_NUMBER_OFFSET


def _rescale(header: Any) -> tuple[float, float]:
    slope = header.get("RescaleSlope")
    intercept = header.get("RescaleIntercept")
    slope = float(slope) if slope not in (None, "") else 1.0
    intercept = float(intercept) if intercept not in (None, "") else 0.0
    if not np.isfinite(slope) or slope <= 0 or not np.isfinite(intercept):
        raise InputError(
            f"source slice has an unusable rescale (slope {slope}, intercept {intercept})"
        )
    return slope, intercept


def _instance(src: Any, hu: np.ndarray, shared: Mapping[str, Any], now: datetime) -> Any:
    """One derived CT instance from its source slice's header and the new HU pixels."""
    pydicom = pydicom_module()  # already imported by the caller: a dictionary lookup
    ds = pydicom.Dataset()
    for keyword in COPIED_ATTRIBUTES:
        if keyword in src:
            ds[keyword] = copy.deepcopy(src[keyword])
    uid = str(pydicom.uid.generate_uid())
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uid
    ds.Modality = "CT"
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.SoftwareVersions = f"IPv2 {__version__}"
    for keyword, value in shared.items():
        setattr(ds, keyword, value)
    # Value 3 onwards (AXIAL, HELIX...) describes the slice, still true of the result.
    image_type = src.get("ImageType") or []
    tail = ([image_type] if isinstance(image_type, str) else list(image_type))[2:] or ["AXIAL"]
    ds.ImageType = ["DERIVED", "SECONDARY", *tail]
    ds.SourceImageSequence = [_source_reference(pydicom, src)]
    slope, intercept = _rescale(src)
    stored = np.clip(np.rint((hu - intercept) / slope), -32768, 32767).astype("<i2")
    # The source's own DS strings when it has them: no precision lost in a re-format.
    ds.RescaleSlope = src.get("RescaleSlope") or "1"
    ds.RescaleIntercept = src.get("RescaleIntercept") or "0"
    ds.RescaleType = "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _source_reference(pydicom: Any, src: Any) -> Any:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = src.get("SOPClassUID", CT_IMAGE_STORAGE)
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    purpose = pydicom.Dataset()  # DICOM CID 7202: the image this one was processed from
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _save(pydicom: Any, ds: Any, path: Path) -> None:
    """Write a Part 10 file (preamble, file meta) in explicit VR little endian."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:  # pydicom 2.x takes the encoding from these flags
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder to ``final``; an earlier output there goes only after."""
    if not final.exists():
        os.replace(tmp, final)
        return
    if not any(final.iterdir()):
        final.rmdir()
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
