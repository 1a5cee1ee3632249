"""Single-file atomic writes: one implementation (``ipv2.io.atomic.atomic_file``) for all.

JSON reports, evaluation CSVs and volumes go through a hidden temporary file in the
target's folder, fsynced and renamed into place; a failure leaves the target as it was
and no temporary file behind.
"""

from __future__ import annotations

import csv
import gzip
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ipv2.cli.evaluate_cmd import write_csv
from ipv2.core.volume import Volume
from ipv2.io.atomic import atomic_file, atomic_text_file, write_json_atomic
from ipv2.io.volumes import read_volume, write_volume
from ipv2.metrics.evaluate import EvaluationResult


def fsync_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_atomic_file_replaces_the_target_after_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fsync_counter(monkeypatch)
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_file(target, suffix=".nii.gz") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.bin.")
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_umask()  # a normal file, not mkstemp's private 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_keeps_the_target_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError), atomic_text_file(target) as fh:
        fh.write("partial")
        raise TypeError("writer failed")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert target.read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_volumes_keep_their_format_through_the_temporary_name(tmp_path: Path) -> None:
    """SimpleITK chooses the format from the name: the temp file must end in .nii.gz."""
    vol = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (0.5, 0.6, 2.0))
    out = write_volume(vol, tmp_path / "v.nii.gz")
    with gzip.open(out, "rb") as fh:  # really gzip-compressed NIfTI
        assert len(fh.read(348)) == 348
    np.testing.assert_array_equal(read_volume(out).array, vol.array)
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]


def test_evaluation_csv_is_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fsync_counter(monkeypatch)
    result = EvaluationResult(
        rows=[{"case": "a", "psnr": 30.0}], summary={"case": "all"}, conventions={}
    )
    target = tmp_path / "m.csv"
    write_csv(target, result)
    assert len(calls) == 1
    with open(target, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"case": "a", "psnr": "30.0"}, {"case": "all", "psnr": ""}]
    assert b"\r\n" in target.read_bytes()  # csv module line endings, untranslated
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]
