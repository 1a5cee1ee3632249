"""``ipv2 purify``, ``ipv2 build-dataset`` and ``ipv2 bench purify`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ipv2.cli import main
from ipv2.core.volume import Volume
from ipv2.io.png_layout import write_png_pair
from ipv2.io.volumes import read_volume, write_volume
from ipv2.phantom import make_phantom
from ipv2.purification.masks import purification_masks


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    case = make_phantom(size=64, slices=3, seed=4)
    files = {"U": root / "u.nrrd", "N": root / "n.nrrd", "W": root / "w.nrrd"}
    write_volume(case.uldct, files["U"])
    write_volume(case.ndct, files["N"])
    write_volume(case.uldct.with_array(case.clean_ld.array), files["W"])
    return files


def test_purify_ipv1_writes_everything(pair_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["purify", "-U", str(pair_files["U"]), "-N", str(pair_files["N"]), "--strategy", "ipv1"]
    assert main([*args, "--T", "0.2", "--out-dir", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "eval_label.nrrd",
        "masks.nrrd",
        "report.json",
        "train_input.nrrd",
    ]
    labels = sitk.ReadImage(str(out / "masks.nrrd"))
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(labels))) == {0, 1, 2}
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["T"] == 0.2 and report["recipe"]["modules"] == []
    assert len(report["lung_fraction"]) == 3 and len(report["background_fraction"]) == 3
    u = read_volume(pair_files["U"])
    inp = read_volume(out / "train_input.nrrd")
    assert inp.shape == u.shape and np.allclose(inp.spacing, u.spacing)


def test_purify_ipv2_with_weak_and_missing_simulator(
    pair_files: dict[str, Path], tmp_path: Path
) -> None:
    base = ["purify", "-U", str(pair_files["U"]), "-N", str(pair_files["N"])]
    out = tmp_path / "a"
    assert (
        main(
            [
                *base,
                "--modules",
                "1,3",
                "--weak-denoiser",
                str(pair_files["W"]),
                "--out-dir",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["formulas"]["label"] == "(L|B)*W + (1-(L|B))*N"
    # Module 2 without --simulated: the simulator is used if installed, else a clear error
    out2 = tmp_path / "b"
    status = main([*base, "--modules", "1,2", "--out-dir", str(out2), "--quiet"])
    try:
        import ipv2.simulation  # noqa: F401
    except ModuleNotFoundError:
        assert status == 1 and not out2.exists()
    else:
        assert status == 0 and (out2 / "simulated.nrrd").exists()


def test_purify_refuses_mismatched_grids(
    pair_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = read_volume(pair_files["N"])
    other = tmp_path / "n2.nrrd"
    write_volume(Volume(n.array, (n.spacing[0] * 1.5, n.spacing[1], n.spacing[2]), n.origin), other)
    out = tmp_path / "out"
    args = [
        "purify",
        "-U",
        str(pair_files["U"]),
        "-N",
        str(other),
        "--strategy",
        "ipv1",
        "--out-dir",
        str(out),
    ]
    assert main(args) == 1
    assert "spacing" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--resample", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resampled"] and "spacing" in report["resampled"][0]


def test_purify_refuses_nan(
    pair_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    u = read_volume(pair_files["U"])
    arr = u.array.copy()
    arr[0, 5, 5] = np.nan
    bad = tmp_path / "nan.nrrd"
    write_volume(u.with_array(arr), bad)
    out = tmp_path / "out"
    assert main(["purify", "-U", str(bad), "-N", str(pair_files["N"]), "--out-dir", str(out)]) == 1
    assert "NaN" in capsys.readouterr().err and not out.exists()


def test_build_dataset_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = np.full((16, 16), -1000.0, np.float32)
    img[4:12, 4:12] = 40.0
    for i in range(4):
        write_png_pair(tmp_path / "src", "train", f"x{i}", u=img, n=img)
    out = tmp_path / "ds"
    args = [
        "build-dataset",
        str(tmp_path / "src"),
        "--out",
        str(out),
        "--strategy",
        "ipv1",
        "--resplit",
        "--seed",
        "3",
    ]
    assert main([*args, "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["seed"] == 3 and len(manifest["cases"]) == 4
    write_png_pair(tmp_path / "bad", "val", "y", u=img, n=np.zeros((16, 17), np.float32) - 1000)
    assert main(["build-dataset", str(tmp_path / "bad"), "--out", str(tmp_path / "ds2")]) == 1
    assert "different sizes" in capsys.readouterr().err and not (tmp_path / "ds2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["opencv", "scipy"])
def test_bench_purify_runs(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "bench",
        "--events",
        "jsonl",
        "purify",
        "--size",
        "128",
        "--slices",
        "8",
        "--repeats",
        "1",
        "--backend",
        backend,
    ]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = next(e for e in events if e["event"] == "done")
    assert done["volume_ms_per_slice"] > 0 and done["single_slice_ms"] > 0
    assert done["backend"] == backend and done["threads"] >= 1


def test_purify_applies_a_weak_denoiser_checkpoint(
    pair_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Module 3 from a checkpoint: W = weak(U) is computed, then L*W + (1-L)*N.

    W is saved beside the outputs for QA, and each output gets a "wrote" line.
    """
    from ipv2.inference.denoise import denoise_volume
    from ipv2.io.checkpoints import load_checkpoint
    from ipv2.slicer.selftest import tiny_checkpoint

    weak = tiny_checkpoint(tmp_path / "weak", arch="regressor")
    out = tmp_path / "out"
    args = ["purify", "-U", str(pair_files["U"]), "-N", str(pair_files["N"]), "--modules", "1,3"]
    assert (
        main([*args, "--strategy", "ipv2", "--weak", str(weak), "--out-dir", str(out), "--quiet"])
        == 0
    )
    label = read_volume(out / "eval_label.nrrd").array
    masks = read_volume(out / "masks.nrrd").array
    u, n = read_volume(pair_files["U"]), read_volume(pair_files["N"])
    w = denoise_volume(u, load_checkpoint(weak))[0].array
    # Module 1's region: the lungs plus the band where the body outline moved.
    band = purification_masks(u.array, n.array).outline_band
    lung = (masks == 2) | band
    report = json.loads((out / "report.json").read_text())
    assert report["outline_band_fraction"] == pytest.approx(list(band.mean(axis=(1, 2))))
    np.testing.assert_allclose(label[lung], w[lung], atol=1e-3)
    np.testing.assert_allclose(label[~lung], n.array[~lung], atol=1e-3)
    np.testing.assert_allclose(read_volume(out / "weak.nrrd").array, w, atol=1e-3)
    err = capsys.readouterr().err
    for name in ("masks", "train_input", "eval_label", "weak"):
        assert f"wrote {out / (name + '.nrrd')}" in err
    assert f"wrote {out / 'report.json'}" in err


def test_purify_defaults_without_a_weak_denoiser_run_modules_1_2_with_one_note(
    pair_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The defaults (ipv2, modules 1,2,3) without --weak-denoiser work: Module 3 is skipped.

    One note says so and names the flag; build-dataset does the same (test_dataset.py).
    """
    out = tmp_path / "out"
    args = ["purify", "-U", str(pair_files["U"]), "-N", str(pair_files["N"])]
    assert main([*args, "--out-dir", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["modules"] == [1, 2]
    assert report["recipe"]["formulas"]["label"] == "(L|B)*U + (1-(L|B))*N"
    assert (out / "eval_label.nrrd").exists() and (out / "train_input.nrrd").exists()
    err = capsys.readouterr().err
    assert err.count("Module 3") == 1 and err.count("--weak-denoiser WEAK") == 1
    assert report["notes"] == [line for line in err.splitlines() if "Module 3" in line]


def test_purify_match_uldct_fits_the_simulated_lung_noise_to_u(tmp_path: Path) -> None:
    """--match-uldct (as in simulate and build-dataset): S's lung noise is U's, no seam."""
    from scipy import ndimage

    case = make_phantom(size=128, slices=2, seed=21)
    files = {"U": tmp_path / "u.nrrd", "N": tmp_path / "n.nrrd"}
    write_volume(case.uldct, files["U"])
    write_volume(case.ndct, files["N"])
    args = ["purify", "-U", str(files["U"]), "-N", str(files["N"]), "--modules", "1,2"]
    assert main([*args, "--match-uldct", "--out-dir", str(tmp_path / "out"), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["inputs"]["match_uldct"] is True
    assert "fitted" in report["inputs"]["simulated"]
    core = ndimage.binary_erosion(case.masks_ref.lung, np.ones((1, 5, 5)))
    sim = read_volume(tmp_path / "out" / "simulated.nrrd").array
    real_core = ndimage.binary_erosion(case.masks_ld.lung, np.ones((1, 5, 5)))
    real = (case.uldct.array - case.clean_ld.array)[real_core].std()
    assert abs((sim - case.clean_ref.array)[core].std() - real) < 0.25 * real


def test_purify_only_builds_one_output_and_reports_per_slice_progress(
    pair_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only`` (the panel's one-slice preview) skips the other output and its work; the
    slow sources send progress events a panel can show (issue 13, item 10)."""
    from ipv2.inference.weak_denoiser import load_weak_denoiser
    from ipv2.slicer.selftest import tiny_checkpoint

    weak = tiny_checkpoint(tmp_path / "weak", arch="regressor")
    args = ["purify", "-U", str(pair_files["U"]), "-N", str(pair_files["N"]), "--events", "jsonl"]
    assert (
        main([*args, "--weak", str(weak), "--only", "input", "--out-dir", str(tmp_path / "i")]) == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = {(e["stage"], e["total"]) for e in events if e["event"] == "progress"}
    assert ("simulate", 3) in stages and not any(stage == "weak" for stage, _ in stages)
    written = sorted(p.name for p in (tmp_path / "i").iterdir())
    assert written == ["masks.nrrd", "report.json", "simulated.nrrd", "train_input.nrrd"]

    assert (
        main([*args, "--weak", str(weak), "--only", "label", "--out-dir", str(tmp_path / "l")]) == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = {(e["stage"], e["total"]) for e in events if e["event"] == "progress"}
    assert ("weak", 3) in stages and not any(stage == "simulate" for stage, _ in stages)
    assert (tmp_path / "l" / "eval_label.nrrd").exists()
    assert not (tmp_path / "l" / "train_input.nrrd").exists()
    w = load_weak_denoiser(weak)(read_volume(pair_files["U"])).array
    np.testing.assert_allclose(read_volume(tmp_path / "l" / "weak.nrrd").array, w, atol=1e-3)
