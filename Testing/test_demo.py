"""``ipv2 demo`` end to end at toy size: every stage runs and the report is complete.

The full-size run (the acceptance figures) is a benchmark: ``ipv2 demo --out DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ipv2.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_toy_demo_writes_report_and_metrics(tmp_path: Path) -> None:
    config = DemoConfig(
        size=96,
        slices=2,
        batch_size=2,
        cases=3,
        steps=3,
        weak_steps=2,
        crop=32,
        base=8,
        sampler_steps=2,
        device="cpu",
        distill=True,
    )
    out = tmp_path / "demo"
    metrics = run_demo(config, out)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "metrics.json",
        "report-difference.png",
        "report.html",
        "report.png",
    ]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["comparison"] == metrics["comparison"]
    # Built in a temporary ".demo.partial-*" folder: no file inside may still name it
    # (training configs, the student's teacher, manifests, logs point into the result).
    stale = [
        str(f.relative_to(out))
        for f in out.rglob("*")
        if f.is_file()
        and f.suffix in {".json", ".jsonl", ".csv", ".html", ".md", ".txt"}
        and ".partial-" in f.read_text(encoding="utf-8")
    ]
    assert stale == []
    student_config = json.loads((out / "student-ipv2" / "student" / "config.json").read_text())
    assert str(out) in json.dumps(student_config)  # its paths lead into the published folder
    # The datasets' fingerprints (hashes of their manifests) moved with the paths.
    from ipv2.data.training_pairs import read_dataset_info

    fingerprint = read_dataset_info(out / "dataset-ipv2").fingerprint
    distilled = json.loads((out / "student-ipv2" / "distill.json").read_text())
    assert distilled["data_fingerprint"] == fingerprint
    teacher = json.loads(
        next((out / "model-ipv2" / "checkpoints").glob("*/model.json")).read_text()
    )
    assert teacher["data_fingerprint"] == fingerprint
    rows = saved["rows"]
    assert set(rows) == {
        "uldct (input)",
        "ipv1-trained FFM",
        "ipv2-trained FFM",
        "ipv2 student (1 step)",
    }
    for row in rows.values():
        assert row["noise_background_hu"] > 0 and row["noise_lung_hu"] > 0
        for region in ("background", "body", "lung"):  # per-region error against the truth
            assert row[f"rmse_{region}_hu"] >= abs(row[f"bias_{region}_hu"])
            assert row[f"rmse_{region}_hu"] > 0 and row[f"noise_{region}_hu"] > 0
    difference = Image.open(out / "report-difference.png")
    assert difference.width >= 4 * 2 * 96 and difference.height > 2 * 2 * 96
    assert "psnr_vs_ipv2_label" in rows["ipv2-trained FFM"]
    assert set(saved["stage_seconds"]) >= {"phantom", "weak denoiser", "train ipv1", "train ipv2"}
    image = Image.open(out / "report.png")
    assert image.width > 6 * 2 * 96 and image.height > 3 * 2 * 96
    html = (out / "report.html").read_text()
    assert "report.png" in html and "IPv2 versus IPv1" in html
    assert "report-difference.png" in html and "W400 L40" in html and "RMSE" in html
    # --distill: the student is ipv2 distill's, checked region by region against its teacher.
    student_checks = saved["comparison"]["student_checks"]
    assert [c["check"].split()[1] for c in student_checks] == ["background", "body", "lung"]
    assert saved["comparison"]["student_passed"] == all(c["passed"] for c in student_checks)
    assert "distill" in saved["stage_seconds"] and "teacher_rmse_hu" in saved["distill_validation"]
    student = json.loads((out / "student-ipv2" / "student" / "final" / "model.json").read_text())
    assert student["role"] == "student" and student["scheme"]["params"]["steps"] == 1
    assert "one-step student against its teacher" in html
    # The IPv2 dataset has labels from the weak denoiser; IPv1's from the fusion.
    assert (out / "dataset-ipv2" / "test" / "label").is_dir()
    assert (out / "weak-denoiser" / "config.json").is_file()


def test_demo_refuses_impossible_settings(tmp_path: Path) -> None:
    from ipv2.core.errors import InputError

    with pytest.raises(InputError, match="at least 3"):
        run_demo(DemoConfig(cases=2), tmp_path / "a")
    with pytest.raises(InputError, match="crop"):
        run_demo(DemoConfig(size=32, crop=64), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_student_checks_compare_each_region_with_the_teacher() -> None:
    from ipv2.demo.student import epochs_for, student_checks

    teacher = {"rmse_background_hu": 20.0, "rmse_body_hu": 90.0, "rmse_lung_hu": 60.0}
    student = {"rmse_background_hu": 21.9, "rmse_body_hu": 99.5, "rmse_lung_hu": 66.1}
    passed = [c.passed for c in student_checks(teacher, student)]
    assert passed == [True, False, False]  # 1.095x, 1.106x, 1.102x against a 1.10x bar
    missing = student_checks(teacher, {"rmse_body_hu": 80.0})
    assert [c.passed for c in missing] == [False, True, False]  # a missing figure fails
    manifest = {
        "cases": [
            {"split": "train", "shape_zyx": [12, 64, 64]},
            {"split": "train", "shape_zyx": [12, 64, 64]},
            {"split": "val", "shape_zyx": [12, 64, 64]},
        ]
    }
    assert epochs_for(1200, manifest, 8) == 400  # 24 slices: 3 full batches per epoch
    assert epochs_for(1, manifest, 8) == 1
