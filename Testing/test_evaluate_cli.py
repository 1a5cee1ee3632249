"""``ipv2 evaluate`` on phantom volumes and PNG folders written to a temporary folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ipv2.cli import main
from ipv2.io.png_layout import write_png_slice
from ipv2.io.volumes import write_volume
from ipv2.metrics.pretrained import CLIP_ENV, INCEPTION_ENV, INCEPTION_FILE
from ipv2.phantom import make_phantom


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    case = make_phantom(64, 8, seed=2)
    paths = {
        "uldct": root / "uldct.nrrd",
        "truth": root / "truth.nrrd",
        "ndct": root / "ndct.nrrd",
        "masks": root / "masks.nrrd",
    }
    write_volume(case.uldct, paths["uldct"])
    write_volume(case.clean_ld, paths["truth"])
    write_volume(case.ndct, paths["ndct"])
    write_volume(case.clean_ld.with_array(case.masks_ld.label_map()), paths["masks"], "uint8")
    for name, vol in (("pred_png", case.uldct), ("label_png", case.ndct)):
        folder = root / name
        folder.mkdir()
        for k, sl in enumerate(vol.array):
            write_png_slice(sl, folder / f"slice{k:03d}.png")
        paths[name] = folder
    # Two cases per folder, paired by file name.
    for folder_name, vols in (
        ("pred_dir", (case.uldct, case.uldct)),
        ("truth_dir", (case.clean_ld,) * 2),
    ):
        folder = root / folder_name
        folder.mkdir()
        for name, vol in zip(("a", "b"), vols, strict=True):
            write_volume(vol if name == "a" else vol.slices(0, 4), folder / f"{name}.nii.gz")
        paths[folder_name] = folder
    return paths


def test_fid_without_weights_exits_nonzero_naming_the_file(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    out = tmp_path / "report.json"
    status = main(
        [
            "evaluate",
            "--pred",
            str(files["uldct"]),
            "--label",
            str(files["ndct"]),
            "--metrics",
            "fid",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert INCEPTION_FILE in err and INCEPTION_ENV in err and "--inception-weights" in err
    assert not out.exists()


def test_ground_truth_metrics_write_table_json_and_csv(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, rows = tmp_path / "report.json", tmp_path / "rows.csv"
    args = ["evaluate", "--pred", str(files["uldct"]), "--truth", str(files["truth"])]
    args += ["--metrics", "psnr,ssim,noise", "--masks", str(files["masks"])]
    status = main([*args, "--out", str(out), "--csv", str(rows), "--quiet"])
    table = capsys.readouterr().out
    assert status == 0
    assert "noise_lung_hu" in table and "all" in table
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["noise_background_hu"] > 20.0 and summary["noise_lung_hu"] > 20.0
    assert 0.0 < summary["ssim"] < 1.0 and summary["psnr"] > 10.0
    assert "eroded" in report["conventions"]["reference"]["noise"]
    assert report["cases"][0]["masks"] == "label map 'masks'"
    with rows.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [r["case"] for r in lines] == ["uldct", "all"]
    assert float(lines[0]["noise_lung_hu"]) == pytest.approx(summary["noise_lung_hu"])
    # An existing report is never overwritten silently.
    assert main([*args, "--out", str(out), "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_truth_against_itself_has_zero_noise_and_no_finite_psnr(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "self.json"
    args = ["evaluate", "--pred", str(files["truth"]), "--truth", str(files["truth"])]
    assert main([*args, "--metrics", "psnr,noise", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["noise_background_hu"] == 0.0 and summary["noise_lung_hu"] == 0.0
    assert summary["psnr"] is None  # infinite PSNR: JSON has no inf


def test_case_folders_give_one_row_per_case_and_mismatches_are_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    args = ["evaluate", "--pred", str(files["pred_dir"]), "--truth", str(files["truth_dir"])]
    assert main([*args, "--metrics", "noise", "--csv", str(rows), "--quiet"]) == 0
    with rows.open(newline="") as fh:
        assert [(r["case"], r["slices"]) for r in csv.DictReader(fh)] == [
            ("a", "8"),
            ("b", "4"),
            ("all", "12"),
        ]
    capsys.readouterr()
    wrong = ["evaluate", "--pred", str(files["pred_dir"]), "--truth", str(files["uldct"])]
    assert main([*wrong, "--metrics", "noise", "--quiet"]) == 1
    assert "do not match" in capsys.readouterr().err


def test_stand_in_features_run_fid_and_kid_on_png_folders(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fid.json"
    args = ["evaluate", "--pred", str(files["pred_png"]), "--label", str(files["label_png"])]
    args += ["--metrics", "fid,kid", "--feature-extractor", "pixelstats", "--kid-subsets", "10"]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not comparable" in captured.err  # the stand-in announces itself
    assert "(shrunk" in captured.out
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["fid"] > 0.0
    assert summary["kid_subset_size"] == 8 and summary["kid_subset_shrunk"] is True
    assert "stand-in" in report["conventions"]["inception"]["extractor"]
    assert report["conventions"]["inception"]["window_hu"] == [-1024.0, 1024.0]


def test_mismatched_slice_counts_are_refused_unless_unpaired(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "evaluate",
        "--pred",
        str(files["pred_dir"] / "b.nii.gz"),
        "--label",
        str(files["ndct"]),
    ]
    args += ["--metrics", "kid", "--feature-extractor", "pixelstats", "--quiet"]
    assert main(args) == 1
    assert "4 predicted slices but 8 label slices" in capsys.readouterr().err
    assert main([*args, "--unpaired", "--kid-subsets", "5"]) == 0


def test_reference_metrics_without_truth_are_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--pred", str(files["uldct"]), "--metrics", "noise"]) == 1
    assert "--truth" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(files["uldct"]), "--metrics", "lpips"]) == 1
    assert "unknown metric" in capsys.readouterr().err


def test_default_metrics_run_offline(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No --metrics and no weights: the ground-truth metrics run; FID/KID/CLIP-FID say why not."""
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.delenv(CLIP_ENV, raising=False)
    out = tmp_path / "report.json"
    args = ["evaluate", "--pred", str(files["uldct"]), "--truth", str(files["truth"])]
    assert main([*args, "--label", str(files["ndct"]), "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"] == ["psnr", "ssim", "noise"]
    assert "fid" not in report["summary"] and report["summary"]["psnr"] > 10.0
    assert any("--inception-weights" in n for n in report["notes"])
    assert "--clip-weights" in capsys.readouterr().err
    # Nothing computable is refused up front, saying what to give.
    assert main(["evaluate", "--pred", str(files["uldct"]), "--label", str(files["ndct"])]) == 1
    assert "--truth" in capsys.readouterr().err


def test_stand_in_refuses_clipfid_that_would_repeat_fid(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pixelstats stand-in has one feature space: CLIP-FID would equal FID, so no."""
    args = ["evaluate", "--pred", str(files["pred_png"]), "--label", str(files["label_png"])]
    args += ["--feature-extractor", "pixelstats", "--kid-subsets", "5"]
    assert main([*args, "--metrics", "fid,clipfid", "--quiet"]) == 1
    assert "repeat" in capsys.readouterr().err
    out = tmp_path / "stand-in.json"
    assert main([*args, "--out", str(out), "--quiet"]) == 0  # default: fid and kid only
    report = json.loads(out.read_text())
    assert report["metrics"] == ["fid", "kid"] and "clipfid" not in report["summary"]


def test_small_sets_warn_for_fid_and_kid(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 slices: FID's covariance is singular and every KID subset is the whole set."""
    out = tmp_path / "small.json"
    args = ["evaluate", "--pred", str(files["pred_png"]), "--label", str(files["label_png"])]
    args += ["--metrics", "fid,kid", "--feature-extractor", "pixelstats", "--kid-subsets", "5"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["summary"]["kid_std"] < 1e-9  # what the warning is about
    warnings = report["warnings"]
    assert any(w.startswith("FID from 8 slices") for w in warnings)
    assert any("kid_std" in w for w in warnings) and any("fewer than" in w for w in warnings)
    assert all(w in err for w in warnings)


def test_per_region_bias_and_rmse_on_a_known_offset(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Truth + 20 HU in the body only: body bias and RMSE exactly 20, lung and background 0."""
    from ipv2.io.volumes import read_volume

    truth = read_volume(files["truth"])
    labels = read_volume(files["masks"]).array
    shifted = tmp_path / "shifted.nrrd"
    write_volume(truth.with_array(truth.array + 20.0 * (labels == 1)), shifted)
    out = tmp_path / "regions.json"
    args = ["evaluate", "--pred", str(shifted), "--truth", str(files["truth"])]
    assert main([*args, "--masks", str(files["masks"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text())["summary"]
    assert summary["bias_body_hu"] == pytest.approx(20.0, abs=1e-4)
    assert summary["rmse_body_hu"] == pytest.approx(20.0, abs=1e-4)
    assert summary["noise_body_hu"] == pytest.approx(0.0, abs=1e-4)  # an offset is not noise
    for region in ("background", "lung"):
        for stat in ("bias", "rmse", "noise"):
            assert summary[f"{stat}_{region}_hu"] == pytest.approx(0.0, abs=1e-4)
    body_line = next(line for line in printed.splitlines() if line.startswith("body "))
    assert body_line.split()[1:3] == ["20", "20"]
    # The noisy input: every region has an error, and RMSE is at least |bias| and noise.
    noisy = tmp_path / "noisy.json"
    args = ["evaluate", "--pred", str(files["uldct"]), "--truth", str(files["truth"])]
    assert main([*args, "--masks", str(files["masks"]), "--out", str(noisy), "--quiet"]) == 0
    s = json.loads(noisy.read_text())["summary"]
    for region in ("background", "body", "lung"):
        assert s[f"rmse_{region}_hu"] > 20.0
        assert s[f"rmse_{region}_hu"] >= abs(s[f"bias_{region}_hu"])
