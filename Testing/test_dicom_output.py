"""DICOM out: ``ipv2 denoise --format dicom`` writes a derived series of the input series.

A synthetic CT series is built here with pydicom (oblique in-plane orientation, unsigned
12-bit storage with a -1024 intercept, as many scanners write), denoised by the real CLI
with a tiny real model into NRRD and into DICOM, and the DICOM read back with SimpleITK
and pydicom: same patient and study, new series and instance UIDs, the source's geometry,
the NRRD's HU within the rescale step. Tilted and gapped series are refused before any
model is loaded; output folders are never written over unless they hold an earlier
IPv2 series and --overwrite is given.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from factories import tiny_checkpoint
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.io.dicom_series import Derivation, write_derived_series
from ipv2.io.dicom_source import pydicom_module, read_source_series
from ipv2.io.volumes import read_volume

PATIENT_ID = "IPV2-TEST-0042"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"
SERIES_UID = "1.2.826.0.1.3680043.8.498.4243"
FRAME_UID = "1.2.826.0.1.3680043.8.498.4244"


def synthetic_hu(depth: int = 6, size: int = 32, seed: int = 0) -> npt.NDArray[np.int16]:
    """A noisy chest-like disk (body, two lungs) in air, in whole HU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    body = np.hypot(xx, yy * 1.3) < size * 0.45
    lungs = (np.hypot(np.abs(xx) - size * 0.18, yy) < size * 0.14) & body
    hu = np.where(body, 40.0, -1000.0)
    hu[lungs] = -850.0
    noisy = hu[np.newaxis] + rng.normal(0, 60, (depth, size, size))
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)


def write_ct_series(
    folder: Path,
    hu: npt.NDArray[np.int16],
    *,
    tilt_deg: float = 0.0,
    skip: int | None = None,
    spacing: float = 2.5,
) -> list[Path]:
    """One CT Image Storage file per slice, with the tags a scanner and a PACS write.

    ``tilt_deg`` tilts the image plane about x while positions advance along the table
    (gantry tilt); ``skip`` leaves out one slice (a gap in the series).
    """
    folder.mkdir(parents=True, exist_ok=True)
    a, t = np.radians(10.0), np.radians(tilt_deg)
    row = [np.cos(a), np.sin(a), 0.0]
    col = [-np.sin(a) * np.cos(t), np.cos(a) * np.cos(t), -np.sin(t)]
    paths = []
    for k in range(hu.shape[0]):
        if k == skip:
            continue
        ds = pydicom.Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime, ds.SeriesDate = "20240105", "101500", "20240105"
        ds.Modality, ds.Manufacturer = "CT", "SynthScan"
        ds.AccessionNumber, ds.ReferringPhysicianName = "ACC123", ""
        ds.StudyDescription, ds.SeriesDescription = "Chest low dose", "1.25mm lung"
        ds.PatientName, ds.PatientID = "Test^Patient", PATIENT_ID
        ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
        ds.SliceThickness, ds.KVP, ds.ConvolutionKernel = "2.5", "100", "LUNG"
        ds.GantryDetectorTilt = f"{tilt_deg:g}"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, SERIES_UID
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "7", "3", str(k + 1)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (-20.0, -15.0, 100.0 + k * spacing)]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = FRAME_UID, ""
        ds.SliceLocation = f"{100.0 + k * spacing:.2f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.PixelSpacing = ["0.7", "0.8"]  # rows 0.7 mm apart, columns 0.8 mm apart
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<u2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"CT{hu.shape[0] - k:03d}.dcm"  # names run against position
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def ipv2(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args], capture_output=True, text=True, timeout=300
    )


def denoise(source: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ipv2(
        "denoise",
        "--input",
        str(source),
        "--model",
        str(model),
        "--out",
        str(out),
        "--steps",
        "2",
        "--device",
        "cpu",
        *extra,
    )


def headers(folder: Path) -> list[pydicom.Dataset]:
    found = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(found, key=lambda d: float(d.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "tiny-ffm")


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory, model: Path) -> dict[str, Path]:
    """One source series denoised twice by the CLI: into NRRD and into DICOM."""
    root = tmp_path_factory.mktemp("rt")
    write_ct_series(root / "src", synthetic_hu())
    before = {p.name: p.read_bytes() for p in (root / "src").iterdir()}
    for out in (root / "d.nrrd", root / "dicom"):
        extra = ("--format", "dicom") if out.suffix == "" else ()
        res = denoise(root / "src", model, out, *extra)
        assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in (root / "src").iterdir()} == before
    return {"src": root / "src", "nrrd": root / "d.nrrd", "dicom": root / "dicom"}


def test_derived_series_keeps_patient_and_study_with_new_uids(
    round_trip: dict[str, Path],
) -> None:
    src, out = headers(round_trip["src"]), headers(round_trip["dicom"])
    assert len(out) == len(src) == 6
    for ds in out:
        assert ds.PatientID == PATIENT_ID and str(ds.PatientName) == "Test^Patient"
        assert ds.StudyInstanceUID == STUDY_UID and ds.AccessionNumber == "ACC123"
        assert ds.FrameOfReferenceUID == FRAME_UID
        assert ds.Modality == "CT" and ds.SOPClassUID == CTImageStorage
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.SeriesNumber != src[0].SeriesNumber
        for text in (ds.SeriesDescription, ds.DerivationDescription):
            assert "IPv2" in text and "2 steps" in text
        assert "tiny-ffm" in ds.DerivationDescription
    series = {ds.SeriesInstanceUID for ds in out}
    assert len(series) == 1 and SERIES_UID not in series
    new = [ds.SOPInstanceUID for ds in out]
    old = {ds.SOPInstanceUID for ds in src}
    assert len(set(new)) == len(new) and not set(new) & old
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in out)


def test_each_slice_points_at_its_source_and_keeps_its_geometry(
    round_trip: dict[str, Path],
) -> None:
    src = {ds.SOPInstanceUID: ds for ds in headers(round_trip["src"])}
    for ds in headers(round_trip["dicom"]):
        (ref,) = ds.SourceImageSequence
        origin = src[ref.ReferencedSOPInstanceUID]
        assert ref.ReferencedSOPClassUID == CTImageStorage
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            np.testing.assert_allclose(
                [float(v) for v in ds[keyword].value], [float(v) for v in origin[keyword].value]
            )
        assert float(ds.SliceThickness) == float(origin.SliceThickness)
        assert (ds.Rows, ds.Columns) == (origin.Rows, origin.Columns)
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 1)
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0


def test_simpleitk_reads_the_source_geometry_and_the_nrrd_voxels(
    round_trip: dict[str, Path],
) -> None:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(round_trip["dicom"])))
    image = reader.Execute()
    source = read_volume(round_trip["src"])
    np.testing.assert_allclose(image.GetOrigin(), source.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), source.spacing, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), source.direction.ravel(), atol=1e-6)
    nrrd = read_volume(round_trip["nrrd"]).array
    dicom_hu = sitk.GetArrayFromImage(image).astype(np.float64)
    assert np.abs(nrrd - source.array).max() > 1, "the model changed nothing: a weak test"
    # Stored as integers with slope 1: each voxel within half a rescale step of the NRRD.
    np.testing.assert_array_less(np.abs(dicom_hu - nrrd), 0.5 + 1e-3)


def test_sidecar_inside_the_folder_names_both_series(round_trip: dict[str, Path]) -> None:
    sidecar = json.loads((round_trip["dicom"] / "denoise.json").read_text())
    out = headers(round_trip["dicom"])
    assert sidecar["format"] == "dicom" and sidecar["steps"] == 2
    assert sidecar["series_instance_uid"] == out[0].SeriesInstanceUID
    assert sidecar["source_series_instance_uid"] == SERIES_UID


@pytest.mark.parametrize(
    ("kind", "message"), [("tilt", "gantry tilt"), ("gap", "non-uniform slice spacing")]
)
def test_tilted_or_gapped_series_is_refused_before_denoising(
    tmp_path: Path, model: Path, kind: str, message: str
) -> None:
    hu = synthetic_hu()
    options = {"tilt_deg": 15.0} if kind == "tilt" else {"skip": 3}
    write_ct_series(tmp_path / "src", hu, **options)  # type: ignore[arg-type]
    res = denoise(tmp_path / "src", model, tmp_path / "out", "--format", "dicom")
    assert res.returncode == 1
    assert message in res.stderr and SERIES_UID in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_gap_message_names_the_instances_around_it(tmp_path: Path) -> None:
    write_ct_series(tmp_path, synthetic_hu(), skip=3)
    with pytest.raises(InputError, match=r"5 mm between instances 3 and 5, 2.5 mm elsewhere"):
        read_source_series(tmp_path)


def test_output_folder_with_content_is_refused_without_overwrite(
    tmp_path: Path, model: Path
) -> None:
    write_ct_series(tmp_path / "src", synthetic_hu())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    res = denoise(tmp_path / "src", model, tmp_path / "out", "--format", "dicom")
    assert res.returncode == 1 and "not empty" in res.stderr and "--overwrite" in res.stderr
    res = denoise(tmp_path / "src", model, tmp_path / "out", "--format", "dicom", "--overwrite")
    assert res.returncode == 1 and "not an earlier IPv2 DICOM output" in res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("where", ["input", "inside", "parent"])
def test_the_input_is_never_the_output_even_with_overwrite(tmp_path: Path, where: str) -> None:
    series = tmp_path / "study" / "src"
    write_ct_series(series, synthetic_hu(depth=2))
    before = sorted(p.name for p in series.iterdir())
    source = read_source_series(series)
    out = {"input": series, "inside": series / "d", "parent": series.parent}[where]
    with pytest.raises(InputError, match="would write into or over the input"):
        write_derived_series(
            read_volume(series),
            source,
            out,
            derivation=Derivation(model="m", arch="ffm", steps=1),
            overwrite=True,
        )
    assert sorted(p.name for p in series.iterdir()) == before


def test_overwrite_replaces_an_earlier_output_atomically(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "src", synthetic_hu(depth=3))
    source, volume = read_source_series(tmp_path / "src"), read_volume(tmp_path / "src")
    derivation = Derivation(model="m", arch="ffm", steps=1)
    first = write_derived_series(
        volume, source, tmp_path / "out", derivation=derivation, sidecar={}
    )
    with pytest.raises(OutputExistsError, match="not empty"):
        write_derived_series(volume, source, tmp_path / "out", derivation=derivation)
    brighter = volume.with_array(volume.array + 100)
    second = write_derived_series(
        brighter, source, tmp_path / "out", derivation=derivation, overwrite=True, sidecar={}
    )
    assert second.series_uid != first.series_uid
    assert {ds.SeriesInstanceUID for ds in headers(tmp_path / "out")} == {second.series_uid}
    np.testing.assert_array_equal(read_volume(tmp_path / "out").array, brighter.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"], "temp folders left"


def test_grid_mismatch_between_volume_and_source_is_refused(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "src", synthetic_hu(depth=3))
    source, volume = read_source_series(tmp_path / "src"), read_volume(tmp_path / "src")
    with pytest.raises(InputError, match="does not lie on the grid"):
        write_derived_series(
            volume.slices(0, 2),
            source,
            tmp_path / "out",
            derivation=Derivation(model="m", arch="ffm", steps=1),
        )
    assert not (tmp_path / "out").exists()


def test_dicom_output_needs_a_dicom_input(
    round_trip: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    res = denoise(round_trip["nrrd"], model, tmp_path / "out", "--format", "dicom")
    assert res.returncode == 1 and "needs a DICOM series folder" in res.stderr
    res = denoise(round_trip["src"], model, tmp_path / "w.nrrd", "--overwrite")
    assert res.returncode == 1 and "--overwrite applies only to --format dicom" in res.stderr


def test_missing_pydicom_is_a_one_line_instruction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # what an environment without it sees
    with pytest.raises(InputError, match=r"pip install 'ipv2\[dicom\]'"):
        pydicom_module()


@pytest.mark.realdata
def test_tcia_series_is_written_back_as_a_derived_series(tcia_dir: Path, tmp_path: Path) -> None:
    """The real series (unsigned 12-bit, Philips tags) through the writer, voxels unchanged."""
    source = read_source_series(tcia_dir)
    volume = read_volume(tcia_dir)
    written = write_derived_series(
        volume,
        source,
        tmp_path / "out",
        derivation=Derivation(model="identity", arch="none", steps=0),
    )
    assert len(written.files) == volume.depth == 24
    back = read_volume(written.folder)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.grid_differences(volume) == []
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    src = {ds.SOPInstanceUID: ds for ds in headers(tcia_dir)}
    for ds in headers(written.folder):
        origin = src[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert ds.PatientID == origin.PatientID and ds.StudyInstanceUID == origin.StudyInstanceUID
        assert ds.ImagePositionPatient == origin.ImagePositionPatient
        assert ds.SeriesInstanceUID == written.series_uid != origin.SeriesInstanceUID
        assert ds.PixelRepresentation == 1 and origin.PixelRepresentation == 0
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", *list(origin.ImageType)[2:]]
    shutil.rmtree(written.folder)


# ------------------------------------------------------------------ Slicer (real MRML)


def dicom_loaded_node(scene, hu: npt.NDArray[np.int16]):  # type: ignore[no-untyped-def]
    """A volume node under patient and study items, as Slicer's DICOM loader leaves it."""
    from ipv2.core.volume import Volume
    from ipv2.slicer.dicom_export import subject_hierarchy
    from ipv2.slicer.nodes import node_from_volume

    node = node_from_volume(Volume(hu.astype(np.float32), (0.8, 0.7, 2.5)), "chest", scene)
    sh = subject_hierarchy(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Test^Patient")
    sh.SetItemUID(patient, "DICOM", PATIENT_ID)
    for tag, value in (("PatientName", "Test^Patient"), ("PatientID", PATIENT_ID)):
        sh.SetItemAttribute(patient, f"DICOM.{tag}", value)
    study = sh.CreateStudyItem(patient, "Chest low dose")
    sh.SetItemUID(study, "DICOM", STUDY_UID)
    for tag, value in (("StudyInstanceUID", STUDY_UID), ("StudyID", "7"), ("StudyDate", "")):
        sh.SetItemAttribute(study, f"DICOM.{tag}", value)
    series = sh.CreateItem(study, node)
    sh.SetItemUID(series, "DICOM", SERIES_UID)
    for tag, value in (
        ("Modality", "CT"),
        ("SeriesNumber", "3"),
        ("SeriesDescription", "1.25mm lung"),
        ("FrameOfReferenceUID", FRAME_UID),
    ):
        sh.SetItemAttribute(series, f"DICOM.{tag}", value)
    return node


def test_denoised_node_joins_the_source_study_as_a_new_series(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.dicom_export import (
        export_tags,
        place_under_source_study,
        record_derivation,
        subject_hierarchy,
    )
    from ipv2.slicer.nodes import node_from_volume, volume_from_node

    source = dicom_loaded_node(scene, synthetic_hu(depth=2))
    denoised = node_from_volume(volume_from_node(source), "chest IPv2 denoised", scene)
    record_derivation(denoised, model="/models/tiny-ffm", arch="ffm", steps=2)
    item = place_under_source_study(denoised, source)
    sh = subject_hierarchy(scene)
    source_item = sh.GetItemByDataNode(source)
    assert sh.GetItemParent(item) == sh.GetItemParent(source_item)
    assert sh.GetItemByDataNode(denoised) == item != source_item
    assert sh.GetItemUID(item, "DICOM") == "", "no series UID: the export makes a new one"
    tags = export_tags(item, scene)
    assert tags["PatientID"] == PATIENT_ID and tags["StudyInstanceUID"] == STUDY_UID
    assert tags["SeriesNumber"] == "1003" and tags["Modality"] == "CT"
    assert tags["FrameOfReferenceUID"] == FRAME_UID
    assert tags["SeriesDescription"] == "IPv2 denoised (ffm, 2 steps) tiny-ffm"
    assert "SeriesInstanceUID" not in tags
    assert sh.GetItemAttribute(source_item, "DICOM.SeriesDescription") == "1.25mm lung"


def test_a_source_without_a_study_is_refused_with_the_way_out(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.volume import Volume
    from ipv2.slicer.dicom_export import place_under_source_study
    from ipv2.slicer.nodes import node_from_volume

    source = node_from_volume(Volume(synthetic_hu(depth=1).astype(np.float32)), "nrrd", scene)
    denoised = node_from_volume(Volume(synthetic_hu(depth=1).astype(np.float32)), "d", scene)
    with pytest.raises(InputError, match=r"not in a DICOM study.*load the series through"):
        place_under_source_study(denoised, source)


def test_panel_files_a_finished_run_under_the_study(scene, model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The panel's path: a real denoising job, then the node filed with what made it."""
    from types import SimpleNamespace

    from ipv2.slicer import workflows as wf
    from ipv2.slicer.dicom_export import SOURCE_REFERENCE, DicomExportMixin, subject_hierarchy

    source = dicom_loaded_node(scene, synthetic_hu(depth=2))
    p = SimpleNamespace(uldctVolume=source, denoisedVolume=None)
    run = wf.start_denoise(
        source, str(model), wf.DenoiseSettings(steps=2, device="cpu"), workdir=str(tmp_path / "w")
    )
    assert run.job.wait(timeout=180) == 0, run.job.log_tail()
    run.job.poll()
    node = wf.finish_denoise(run, scene)
    DicomExportMixin.fileDenoised(p, node, run)
    sh = subject_hierarchy(scene)
    assert p.denoisedVolume is node and node.GetNodeReference(SOURCE_REFERENCE) is source
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == sh.GetItemParent(
        sh.GetItemByDataNode(source)
    )
    description = sh.GetItemAttribute(sh.GetItemByDataNode(node), "DICOM.SeriesDescription")
    assert description == "IPv2 denoised (ffm, 2 steps) tiny-ffm"


class RecordingExporter:
    """Stand-in for Slicer's DICOMScalarVolumePlugin, which needs the running application:
    it keeps what export_as_dicom hands it, in the plugin's interface."""

    def __init__(self, error: str = "") -> None:
        self.error = error
        self.exported: list[object] = []

    def examineForExport(self, item: int) -> list[object]:
        from types import SimpleNamespace

        tags: dict[str, str] = {}
        return [SimpleNamespace(item=item, directory="", tags=tags, setTag=tags.__setitem__)]

    def export(self, exportables: list[object]) -> str:
        self.exported = exportables
        return self.error


def test_export_hands_the_study_and_series_tags_to_slicers_exporter(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer.dicom_export import export_as_dicom
    from ipv2.slicer.nodes import node_from_volume, volume_from_node

    source = dicom_loaded_node(scene, synthetic_hu(depth=2))
    denoised = node_from_volume(volume_from_node(source), "d", scene)
    exporter = RecordingExporter()
    path = export_as_dicom(denoised, source, tmp_path, exporter=exporter)
    (exportable,) = exporter.exported
    assert exportable.directory == str(tmp_path)  # type: ignore[attr-defined]
    assert path == tmp_path / f"ScalarVolume_{exportable.item}"  # type: ignore[attr-defined]
    tags = exportable.tags  # type: ignore[attr-defined]
    assert tags["StudyInstanceUID"] == STUDY_UID and tags["PatientID"] == PATIENT_ID
    assert tags["SeriesNumber"] == "1003"
    with pytest.raises(IPv2Error, match="export failed: disk full"):
        export_as_dicom(denoised, source, tmp_path, exporter=RecordingExporter("disk full"))
