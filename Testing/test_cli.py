"""The ``ipv2`` command line as users run it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipv2.io.volumes import read_volume


def ipv2(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_subcommand() -> None:
    out = ipv2("--help")
    assert out.returncode == 0
    for name in (
        "purify",
        "simulate",
        "build-dataset",
        "train",
        "denoise",
        "evaluate",
        "demo",
        "bench",
        "phantom",
    ):
        assert name in out.stdout


def test_unknown_options_are_refused_with_usage() -> None:
    out = ipv2("phantom", "--out", "x", "--no-such-option")
    assert out.returncode == 2
    assert "unrecognized arguments: --no-such-option" in out.stderr


def test_phantom_writes_pairs_preview_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = ipv2(
        "phantom", "--out", str(out), "--size", "64", "--slices", "3", "--cases", "2", "--seed", "5"
    )
    assert res.returncode == 0, res.stderr
    for case in ("case000", "case001"):
        folder = out / case
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(
            [
                "ndct.nrrd",
                "uldct.nrrd",
                "clean_ref.nrrd",
                "clean_ld.nrrd",
                "labels_ref.nrrd",
                "labels_ld.nrrd",
                "preview.png",
                "phantom.json",
            ]
        )
        nd, ld = read_volume(folder / "ndct.nrrd"), read_volume(folder / "uldct.nrrd")
        assert nd.shape == ld.shape == (3, 64, 64)
        labels = read_volume(folder / "labels_ref.nrrd").array
        assert set(np.unique(labels)) == {0.0, 1.0, 2.0}
    params = json.loads((out / "case001" / "phantom.json").read_text())
    assert params["seed"] == 6 and params["size"] == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_phantom_events_are_json_lines(tmp_path: Path) -> None:
    res = ipv2(
        "phantom",
        "--out",
        str(tmp_path / "p"),
        "--size",
        "32",
        "--slices",
        "1",
        "--events",
        "jsonl",
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and kinds[-1] == "done"
    assert events[-1]["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "31"], "even number"),
        (["--slices", "0"], "slices"),
        (["--cases", "0"], "--cases"),
    ],
)
def test_phantom_bad_input_fails_cleanly_writing_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = ipv2("phantom", "--out", str(tmp_path / "p"), *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_phantom_refuses_an_existing_folder_with_content(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    keep = tmp_path / "p" / "mine.txt"
    keep.write_text("precious")
    res = ipv2("phantom", "--out", str(tmp_path / "p"), "--size", "32", "--slices", "1")
    assert res.returncode == 1 and "already exists" in res.stderr
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["mine.txt"]


def test_errors_in_jsonl_mode_are_events(tmp_path: Path) -> None:
    res = ipv2("phantom", "--out", str(tmp_path / "p"), "--size", "31", "--events", "jsonl")
    assert res.returncode == 1
    last = json.loads(res.stdout.splitlines()[-1])
    assert last["event"] == "error" and "even number" in last["message"]
