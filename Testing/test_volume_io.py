"""Volume value and its file formats: arrays and geometry survive every round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from factories import oblique_volume, write_dicom_series

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.volumes import list_dicom_series, read_volume, write_volume


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz", ".mha"])
def test_round_trip_keeps_array_and_geometry(tmp_path: Path, suffix: str) -> None:
    vol = oblique_volume()
    path = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    # NIfTI stores its affine in float32; the others keep doubles exactly.
    tol = 1e-4 if suffix.startswith(".nii") else 1e-12
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(back.origin, vol.origin, rtol=0, atol=tol * 1000)
    np.testing.assert_allclose(back.direction, vol.direction, rtol=0, atol=tol)


def test_int16_output_rounds_hu(tmp_path: Path) -> None:
    vol = Volume(np.array([[[-1000.4, 20.6], [3000.5, -3024.0]]], np.float32))
    back = read_volume(write_volume(vol, tmp_path / "v.nrrd", dtype="int16"))
    np.testing.assert_array_equal(back.array, [[[-1000, 21], [3000, -3024]]])


def test_two_d_slice_is_a_volume_of_depth_one() -> None:
    vol = Volume(np.zeros((4, 5)))
    assert vol.shape == (1, 4, 5)


def test_write_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    vol = oblique_volume()
    target = tmp_path / "v.nrrd"
    target.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_volume(vol, target)
    assert target.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]


def test_dicom_series_applies_rescale_and_sorts_by_position(tmp_path: Path) -> None:
    hu = np.stack([np.full((8, 8), -1000 + 300 * k, np.int16) for k in range(4)])
    files = write_dicom_series(tmp_path / "s", hu, "1.2.826.0.1.3680043.2.1125.1")
    stored = pydicom.dcmread(files[0]).pixel_array
    assert int(stored[0, 0]) == -1000 + 1024, "stored values must differ from HU"
    vol = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, hu.astype(np.float32))
    assert vol.spacing == pytest.approx((0.75, 0.75, 2.0))
    assert vol.origin == pytest.approx((-10.0, -20.0, 0.0))


def test_folder_with_two_series_names_both(tmp_path: Path) -> None:
    hu = np.full((2, 8, 8), -1000, np.int16)
    write_dicom_series(tmp_path, hu, "1.2.3.111", description="lung")
    write_dicom_series(tmp_path, hu, "1.2.3.222", description="soft")
    with pytest.raises(InputError) as err:
        read_volume(tmp_path)
    assert "1.2.3.111" in str(err.value) and "1.2.3.222" in str(err.value)
    assert "--series" in str(err.value)
    chosen = read_volume(tmp_path, series_uid="1.2.3.222")
    assert chosen.shape == (2, 8, 8)
    assert {s.uid for s in list_dicom_series(tmp_path)} == {"1.2.3.111", "1.2.3.222"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.nrrd", None, "does not exist"),
        ("scan.png", b"\x89PNG", "HU window"),
        ("scan.xyz", b"data", "unsupported file type"),
        ("broken.nrrd", b"not an nrrd", "cannot read"),
    ],
)
def test_bad_files_give_clear_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_volume(path)


def test_four_d_image_is_refused(tmp_path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([4, 4, 3, 2], sitk.sitkFloat32), str(tmp_path / "t.nrrd"))
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "t.nrrd")


@pytest.mark.realdata
def test_tcia_series_loads_in_hu_with_geometry(tcia_dir: Path, tcia_volume: Volume) -> None:
    vol = tcia_volume
    assert vol.shape == (24, 512, 512)
    assert vol.spacing == pytest.approx((0.842, 0.842, 5.0), abs=1e-3)
    # Air outside the patient, inside the reconstruction circle: about -1000 HU.
    air = vol.array[:, 40:60, 236:276]
    assert -1050 < float(np.median(air)) < -950
    # Same voxels as pydicom's stored values with the rescale applied, slice by position.
    files = sorted(
        tcia_dir.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2])
    )
    ds = pydicom.dcmread(files[3])
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    k = 3 if vol.direction[2, 2] > 0 else vol.depth - 4
    np.testing.assert_array_equal(vol.array[k], expected.astype(np.float32))


@pytest.mark.realdata
def test_tcia_copy_with_a_second_series_is_refused(tcia_dir: Path, tmp_path: Path) -> None:
    files = sorted(tcia_dir.glob("*.dcm"))[:4]
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / f.name)
        if i >= 2:
            ds = pydicom.dcmread(tmp_path / f.name)
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.99"
            ds.save_as(tmp_path / f.name)
    with pytest.raises(InputError, match="2 DICOM series"):
        read_volume(tmp_path)
