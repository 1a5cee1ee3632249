"""Hostile inputs to the volume readers and to ``ipv2 evaluate``'s outputs (issue 18: B, 1, 5, 10).

The bombs are headers only, a few hundred bytes written by the tests themselves: a header
that declares a huge volume must be refused from its declared size, before any reader
allocates pixel memory (under an address-space limit such an allocation can end the
process with a segfault rather than an exception). Crash-type cases run the real CLI in a
child process and check what a user sees: exit status 1, exactly one line on stderr, and
no new files.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from factories import write_dicom_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipv2.cli import main
from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.output_guard import check_outputs_apart
from ipv2.io.png_layout import read_gray8, write_png_slice
from ipv2.io.volume_limits import MAX_VOLUME_ENV, max_volume_bytes
from ipv2.io.volumes import read_volume, write_volume

HUGE = 100_000  # voxels a side: 2 PB of int16, beyond any machine


# --------------------------------------------------------------------------- helpers


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=child_env,
        timeout=120,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def small_volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.uniform(-1000, 400, (3, 16, 16)).astype(np.float32), (0.8, 0.8, 2.0))


def nrrd_bomb(path: Path, *, gzip_data: bool = False) -> Path:
    """An NRRD header declaring HUGE^3 int16 voxels, followed by 10 bytes of data."""
    data = gzip.compress(b"\0" * 10) if gzip_data else b"0123456789"
    header = (
        "NRRD0004\ntype: short\ndimension: 3\n"
        f"sizes: {HUGE} {HUGE} {HUGE}\n"
        f"encoding: {'gzip' if gzip_data else 'raw'}\nendian: little\n\n"
    )
    path.write_bytes(header.encode() + data)
    return path


def mha_bomb(path: Path) -> Path:
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"DimSize = {HUGE} {HUGE} {HUGE}\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + b"0123456789")
    return path


def nifti_bomb(path: Path) -> Path:
    """A NIfTI-1 header declaring 32767^3 int16 voxels (the format's largest side)."""
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    hdr[344:348] = b"n+1\0"
    path.write_bytes(bytes(hdr) + b"0123456789")
    return path


def png_bomb(path: Path, width: int = HUGE, height: int = HUGE) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit gray, with one tiny chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def dicom_bomb(folder: Path) -> Path:
    """A real 3-slice series whose Rows/Columns are then rewritten to 65535."""
    hu = np.full((3, 8, 8), -500, np.int16)
    for f in write_dicom_series(folder, hu, "1.2.826.0.1.3680043.2.1125.77"):
        ds = pydicom.dcmread(f)
        ds.Rows = 65535
        ds.Columns = 65535
        ds.save_as(f)
    return folder


# ------------------------------------------------------------- 1: header-first reading


def gzip_nrrd_bomb(path: Path) -> Path:
    return nrrd_bomb(path, gzip_data=True)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (nrrd_bomb, "bomb.nrrd"),
        (gzip_nrrd_bomb, "bomb.nrrd"),
        (mha_bomb, "bomb.mha"),
        (nifti_bomb, "bomb.nii"),
    ],
)
def test_volume_header_bombs_are_refused_from_their_declared_size(
    tmp_path: Path, make: Callable[[Path], Path], name: str
) -> None:
    path = make(tmp_path / name)
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message
    assert "declares" in message and MAX_VOLUME_ENV in message, message
    side = "32767" if name.endswith(".nii") else str(HUGE)
    assert f"{side} x {side} x {side}" in message, message


def test_nrrd_header_bomb_in_the_cli_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    bomb = nrrd_bomb(tmp_path / "bomb.nrrd", gzip_data=True)
    out = tmp_path / "out"
    out.mkdir()
    before = listing(tmp_path)
    proc = run_cli("simulate", "--ndct", str(bomb), "--out", str(out / "s.nrrd"))
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert f"{HUGE} x {HUGE} x {HUGE}" in line and MAX_VOLUME_ENV in line, line
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("d.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
         "endian: little\ndata file: /dev/zero\n\n"),
        ("d.mha", "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
         "ElementDataFile = ../secret.raw\n"),
    ],
)  # fmt: skip
def test_headers_naming_another_data_file_are_refused(
    tmp_path: Path, name: str, header: str
) -> None:
    """A detached-data header would open any path it names (a device, another file)."""
    path = tmp_path / name
    path.write_text(header)
    with pytest.raises(InputError, match="keeps its pixel data in another file"):
        read_volume(path)


def test_limit_override_refuses_a_genuine_small_volume_and_names_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_volume(small_volume(), tmp_path / "v.nii.gz")
    monkeypatch.setenv(MAX_VOLUME_ENV, "1000")
    with pytest.raises(InputError, match=r"16 x 16 x 3 voxels of 32-bit float \(3 KiB") as info:
        read_volume(path)
    assert "1000 B" in str(info.value)
    monkeypatch.setenv(MAX_VOLUME_ENV, "1M")
    assert read_volume(path).shape == (3, 16, 16)


def test_bad_limit_override_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_VOLUME_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_VOLUME_ENV}.*'lots'"):
        max_volume_bytes()


def test_default_limit_is_a_share_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_VOLUME_ENV, raising=False)
    limit, why = max_volume_bytes()
    assert 0 < limit < 2 * HUGE**3
    assert "memory" in why


def test_png_header_bomb_is_one_line_in_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    png_bomb(folder / "a.png")
    before = listing(tmp_path)
    proc = run_cli(
        "evaluate", "--pred", str(folder), "--truth", str(folder), "--metrics", "psnr",
        "--out", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "a.png" in line and f"{HUGE * HUGE} pixels" in line, line
    assert listing(tmp_path) == before


def test_png_within_pillows_guard_is_still_checked_against_the_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = png_bomb(tmp_path / "wide.png", 9000, 9000)  # 81 Mpixel: under Pillow's guard
    monkeypatch.setenv(MAX_VOLUME_ENV, "1M")
    with pytest.raises(InputError, match=r"9000 x 9000 pixels"):
        read_gray8(path)


def test_dicom_rows_and_columns_times_files_are_checked_before_reading(tmp_path: Path) -> None:
    folder = dicom_bomb(tmp_path / "dicom")
    out = tmp_path / "out"
    out.mkdir()
    before = listing(tmp_path)
    proc = run_cli(
        "simulate", "--ndct", str(folder), "--out", str(out / "s.nrrd"),
        env={MAX_VOLUME_ENV: "1G"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "65535 x 65535 x 3" in line and MAX_VOLUME_ENV in line, line
    assert listing(tmp_path) == before


# Byte corruptions land mostly in the header, where a reader decides what to allocate.
_EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.booleans()), min_size=1, max_size=8
)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=_EDITS, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_corrupted_volume_files_load_or_fail_in_one_line_without_native_noise(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    edits: list[tuple[int, int, bool]],
    cut: float | None,
) -> None:
    monkeypatch.setenv(MAX_VOLUME_ENV, "64M")  # a corrupted size must be refused, not tried
    good = tmp_path / f"good{suffix}"
    if not good.exists():
        write_volume(small_volume(), good)
    data = bytearray(good.read_bytes())
    header = data.index(b"\n\n") + 2 if suffix == ".nrrd" else data.index(b"LOCAL\n") + 6
    for position, value, in_header in edits:
        data[position % (header if in_header else len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(bytes(data))
    capfd.readouterr()
    try:
        volume = read_volume(bad)
    except InputError as exc:
        assert "\n" not in str(exc), str(exc)
        assert capfd.readouterr().err == ""
    else:
        assert volume.array.dtype == np.float32


# ------------------------------------------- 10: folders that are not a DICOM series


def _png_folder(folder: Path) -> Path:
    folder.mkdir()
    write_png_slice(np.zeros((8, 8), np.float32), folder / "a.png")
    return folder


def _fake_dicom_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"not dicom at all")
    (folder / "2.dcm").write_bytes(b"\0" * 200)
    return folder


def _empty_folder(folder: Path) -> Path:
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_png_folder, "holds PNG images"),
        (_empty_folder, "is empty"),
        (_fake_dicom_folder, "holds 2 .dcm files that are not readable DICOM"),
    ],
)
def test_folders_that_are_not_a_series_say_what_they_hold_without_itk_warnings(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    make: Callable[[Path], Path],
    expected: str,
) -> None:
    folder = make(tmp_path / "in")
    capfd.readouterr()
    with pytest.raises(InputError, match=expected) as info:
        read_volume(folder)
    assert "no DICOM series found" not in str(info.value)
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err + captured.out, captured.err


def test_png_folder_given_to_simulate_names_the_png_layout_in_one_line(tmp_path: Path) -> None:
    folder = _png_folder(tmp_path / "pngs")
    before = listing(tmp_path)
    proc = run_cli("simulate", "--ndct", str(folder), "--out", str(tmp_path / "s.nrrd"))
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "holds PNG images" in line and "build-dataset" in line, line
    assert listing(tmp_path) == before


def test_itk_warning_display_is_restored_after_the_probe(tmp_path: Path) -> None:
    import SimpleITK as sitk

    before = sitk.ProcessObject_GetGlobalWarningDisplay()
    with pytest.raises(InputError):
        read_volume(_empty_folder(tmp_path / "e"))
    assert sitk.ProcessObject_GetGlobalWarningDisplay() == before


# ---------------------------------------------- B: evaluate never writes over an input


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    pred = write_volume(small_volume(1), tmp_path / "P.nrrd")
    truth = write_volume(small_volume(2), tmp_path / "T.nrrd")
    return pred, truth


def _evaluate(pred: Path, truth: Path, *extra: str) -> int:
    return main(
        ["evaluate", "--metrics", "psnr,ssim", "--pred", str(pred), "--truth", str(truth),
         "--quiet", *extra]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("option", "target"), [("--out", "P.nrrd"), ("--csv", "T.nrrd"), ("--out", "./T.nrrd")]
)
def test_evaluate_refuses_an_output_that_is_an_input_even_with_overwrite(
    pair: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    target: str,
) -> None:
    pred, truth = pair
    monkeypatch.chdir(pred.parent)
    saved = {p: p.read_bytes() for p in pair}
    status = _evaluate(pred, truth, option, target, "--overwrite")
    assert status == 1
    line = one_line(capsys.readouterr().err)
    assert option in line and "input" in line, line
    assert {p: p.read_bytes() for p in pair} == saved
    assert sorted(p.name for p in pred.parent.iterdir()) == ["P.nrrd", "T.nrrd"]


def test_evaluate_refuses_a_file_inside_an_input_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    a = write_volume(small_volume(1), cases / "a.nrrd")
    truth = write_volume(small_volume(2), tmp_path / "T.nrrd")
    link = tmp_path / "link.json"
    link.symlink_to(a)
    saved = a.read_bytes()
    for target in (a, link):
        assert _evaluate(cases, truth, "--out", str(target), "--overwrite") == 1
        assert "--pred" in one_line(capsys.readouterr().err)
    assert a.read_bytes() == saved and link.is_symlink()


def test_evaluate_refuses_two_outputs_with_one_name(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = pair
    report = pred.parent / "R.x"
    status = _evaluate(pred, truth, "--out", str(report), "--csv", str(report))
    assert status == 1
    line = one_line(capsys.readouterr().err)
    assert "--out" in line and "--csv" in line, line
    assert not report.exists()


def test_evaluate_still_writes_distinct_outputs_beside_its_inputs(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = pair
    out, csv_file = pred.parent / "r.json", pred.parent / "r.csv"
    assert _evaluate(pred, truth, "--out", str(out), "--csv", str(csv_file)) == 0
    assert out.read_text().lstrip().startswith("{") and csv_file.read_text().startswith("case")


def test_output_guard_compares_resolved_paths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.nrrd").write_bytes(b"x")
    check_outputs_apart(
        outputs={"--out": data / "new.json", "--csv": tmp_path / "r.csv"},
        inputs={"--pred": data, "--label": None},
    )
    with pytest.raises(OutputExistsError, match="--pred"):
        check_outputs_apart(outputs={"--out": data / ".." / "data"}, inputs={"--pred": data})
    with pytest.raises(OutputExistsError, match="--pred"):
        check_outputs_apart(outputs={"--out": tmp_path}, inputs={"--pred": data})
    with pytest.raises(InputError, match="--out and --csv"):
        check_outputs_apart(
            outputs={"--out": tmp_path / "r", "--csv": tmp_path / "." / "r"}, inputs={}
        )


# ------------------------------------------------ 5: an output that is a folder


def test_evaluate_overwrite_onto_a_folder_is_one_line_and_keeps_the_folder(
    pair: tuple[Path, Path],
) -> None:
    pred, truth = pair
    folder = pred.parent / "D"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    before = listing(pred.parent)
    proc = run_cli(
        "evaluate", "--metrics", "psnr", "--pred", str(pred), "--truth", str(truth),
        "--out", str(folder), "--overwrite",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "folder" in line, line
    assert listing(pred.parent) == before
    assert (folder / "keep.txt").read_text() == "mine"


def test_atomic_writers_refuse_a_folder_target_for_every_caller(tmp_path: Path) -> None:
    from ipv2.io.atomic import write_json_atomic

    folder = tmp_path / "D"
    folder.mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        write_json_atomic(folder, {"a": 1})
    volume_folder = tmp_path / "V.nrrd"
    volume_folder.mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        write_volume(small_volume(), volume_folder, overwrite=True)
    with pytest.raises(InputError, match="does not exist"):
        write_json_atomic(tmp_path / "missing" / "r.json", {})
    assert listing(tmp_path) == ["D", "V.nrrd"]


def test_native_stderr_is_held_and_shown_only_after_a_successful_read(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from ipv2.io.native_stderr import native_stderr_held

    capfd.readouterr()
    with native_stderr_held() as held:
        os.write(2, b"WARNING: In reader.cxx, line 9\nReader: odd scales\n\n")
        os.write(2, b"MetaImage: Uncompress failed\n")
    assert capfd.readouterr().err == ""
    assert held.failure() == "MetaImage: Uncompress failed"
    held.replay()
    assert "odd scales" in capfd.readouterr().err
    with pytest.raises(RuntimeError), native_stderr_held():
        os.write(2, b"dropped\n")
        raise RuntimeError("reader failed")
    assert capfd.readouterr().err == ""
