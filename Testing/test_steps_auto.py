"""Sampler steps chosen by measurement (issue 14, item 3): the choice rule on hand-written
curves, ``--steps auto`` in the engine and on the command line, old models without a curve,
and the model card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import tiny_checkpoint

from ipv2.core.errors import InputError
from ipv2.inference.denoise import DenoiseOptions, denoise_array, sampler_steps
from ipv2.inference.model_card import card_text
from ipv2.inference.steps_auto import (
    StepsPoint,
    choose_for_model,
    choose_steps,
    parse_steps,
    read_curve,
    tolerance_hu,
)
from ipv2.io.checkpoints import load_checkpoint, read_metadata
from ipv2.io.volumes import write_volume
from ipv2.phantom import make_phantom

# 2 steps are 0.5 HU above the best (10 steps, 60.0 HU), inside the 1.2 HU tolerance.
CURVE = [
    {"steps": 1, "rmse_hu": 80.0, "seconds_per_slice": 0.025},
    {"steps": 2, "rmse_hu": 60.5, "seconds_per_slice": 0.05},
    {"steps": 4, "rmse_hu": 60.2, "seconds_per_slice": 0.1},
    {"steps": 10, "rmse_hu": 60.0, "seconds_per_slice": 0.25},
]
BASIS = {"device": "cpu", "slice_shape": [64, 64], "slices": 4}


def with_curve(folder: Path, curve: Any = CURVE, basis: Any = BASIS) -> Path:
    """Add a hand-written steps curve to a model's model.json (not part of the weights' hash)."""
    meta = json.loads((folder / "model.json").read_text())
    meta["steps_curve"] = curve
    if basis is not None:
        meta["steps_curve_basis"] = basis
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def points(*pairs: tuple[int, float | None]) -> list[StepsPoint]:
    return [StepsPoint(k, e) for k, e in pairs]


def test_the_rule_takes_the_fewest_steps_within_the_tolerance_of_the_best() -> None:
    assert tolerance_hu(60.0) == pytest.approx(1.2)  # 2% of the best
    assert tolerance_hu(20.0) == 1.0  # never below 1 HU
    assert choose_steps(points((1, 80.0), (2, 60.5), (4, 60.2), (10, 60.0))) == 2
    assert choose_steps(points((1, 80.0), (2, 61.3), (4, 60.2), (10, 60.0))) == 4  # 1.3 > 1.2
    assert choose_steps(points((1, 60.9), (10, 60.0))) == 1  # more steps gained too little
    assert choose_steps(points((1, 10.9), (10, 10.0))) == 1  # the 1 HU floor
    assert choose_steps(points((1, 11.1), (10, 10.0))) == 10
    assert choose_steps(points((1, 55.0), (2, 58.0), (10, 60.0))) == 1  # fewer can be best
    assert choose_steps(points((1, None), (2, 70.0), (10, 69.5))) == 2  # diverged: skipped
    assert choose_steps(points((1, None))) is None


def test_choice_for_a_model_given_configured_one_pass_and_damaged_curves() -> None:
    meta: dict[str, Any] = {
        "scheme": {"name": "flow", "params": {"steps": 10}},
        "steps_curve": CURVE,
        "steps_curve_basis": BASIS,
    }
    auto = choose_for_model(meta)
    assert (auto.steps, auto.how) == (2, "auto") and auto.curve is not None
    assert (
        auto.note.startswith("2 steps (auto: the fewest within 1.2 HU") and "60.0 HU" in auto.note
    )
    assert choose_for_model(meta, 3).steps == 3 and choose_for_model(meta, "3").how == "given"
    assert choose_for_model(meta, None).steps == 10  # the engine API's historical default
    old = {"scheme": {"name": "flow", "params": {"steps": 10}}}
    fallback = choose_for_model(old)
    assert (fallback.steps, fallback.how) == (10, "configured")
    assert "no steps curve" in fallback.note
    damaged = {**old, "steps_curve": [{"steps": 2, "rmse_hu": "low"}]}
    assert read_curve(damaged)[0] is None
    assert "unusable entry" in choose_for_model(damaged).note
    twice = {**old, "steps_curve": [{"steps": 2, "rmse_hu": 1.0}, {"steps": 2, "rmse_hu": 2.0}]}
    assert choose_for_model(twice).steps == 10 and "twice" in choose_for_model(twice).note
    redcnn = {"scheme": {"name": "regression", "params": {"steps": 1}}}
    assert choose_for_model(redcnn).steps == 1 and "one-pass" in choose_for_model(redcnn).note


@pytest.mark.parametrize("bad", ["0", "-2", "many", "2.5", 0, True])
def test_steps_option_takes_auto_or_a_positive_count(bad: Any) -> None:
    assert parse_steps("auto") == "auto" and parse_steps(" AUTO ") == "auto"
    assert parse_steps("7") == 7 and parse_steps(7) == 7 and parse_steps(None) is None
    with pytest.raises(InputError, match="--steps must be 'auto' or a positive number"):
        parse_steps(bad)


def test_expected_time_scales_with_steps_and_pixels() -> None:
    curve, problem = read_curve({"steps_curve": CURVE, "steps_curve_basis": BASIS})
    assert curve is not None and problem is None
    assert curve.seconds_per_slice(2) == pytest.approx(0.05)
    assert curve.seconds_per_slice(2, (128, 128)) == pytest.approx(0.2)  # 4x the pixels
    assert curve.seconds_per_slice(5) == pytest.approx(0.125)  # 10 steps' rate per step
    assert curve.where() == "on cpu, 4 validation slices of 64x64"


@pytest.fixture(scope="module")
def curved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_curve(tiny_checkpoint(tmp_path_factory.mktemp("m") / "ffm"))


def test_engine_auto_follows_the_curve_and_a_count_overrides(curved_model: Path) -> None:
    loaded = load_checkpoint(curved_model)
    assert loaded.scheme.default_steps == 10
    choice = sampler_steps(loaded, "auto")
    assert choice.steps == 2 and choice.curve is not None
    hu = make_phantom(size=32, slices=2, seed=1).uldct.array
    out, info = denoise_array(hu, loaded, DenoiseOptions(steps="auto", device="cpu"))
    assert info.steps == 2 and info.steps_how == "auto" and out.shape == hu.shape
    assert info.to_json()["steps_note"] == choice.note
    _, given = denoise_array(hu, loaded, DenoiseOptions(steps=3, device="cpu"))
    assert given.steps == 3 and given.steps_how == "given"
    _, default = denoise_array(hu, loaded, DenoiseOptions(device="cpu"))
    assert default.steps == 10 and default.steps_how == "configured"  # API default kept


def _denoise_cli(model: Path, tmp_path: Path, name: str, *extra: str) -> tuple[Any, dict[str, Any]]:
    source = tmp_path / "u.nrrd"
    if not source.exists():
        write_volume(make_phantom(size=32, slices=2, seed=1).uldct, source)
    res = subprocess.run(
        [sys.executable, "-m", "ipv2", "denoise", "--input", str(source), "--model", str(model),
         "--out", str(tmp_path / f"{name}.nrrd"), "--device", "cpu", "--threads", "1", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res, json.loads((tmp_path / f"{name}.json").read_text())


def test_cli_defaults_to_auto_and_an_old_model_keeps_its_steps(
    curved_model: Path, tmp_path: Path
) -> None:
    res, side = _denoise_cli(curved_model, tmp_path, "auto")
    assert side["steps"] == 2 and side["steps_how"] == "auto"
    assert "sampler: 2 steps (auto: the fewest within 1.2 HU" in res.stdout + res.stderr
    old = tiny_checkpoint(tmp_path / "old")  # written as before: no steps curve
    assert "steps_curve" not in read_metadata(old)
    res, side = _denoise_cli(old, tmp_path, "old")
    assert side["steps"] == 10 and side["steps_how"] == "configured"
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "sampler:" in ln]
    assert (
        len(lines) == 1 and "configured steps, since its model.json has no steps curve" in lines[0]
    )
    bad = subprocess.run(
        [sys.executable, "-m", "ipv2", "denoise", "--input", str(tmp_path / "u.nrrd"),
         "--model", str(old), "--out", str(tmp_path / "x.nrrd"), "--steps", "few"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "--steps must be 'auto'" in bad.stderr
    assert not (tmp_path / "x.nrrd").exists()


def test_model_card_shows_the_curve_and_the_auto_choice(curved_model: Path, tmp_path: Path) -> None:
    card = card_text(read_metadata(curved_model))
    assert "10 network calls per slice as configured; --steps auto takes 2 steps" in card
    assert "Steps curve:" in card and "1: 80.0 HU, 25 ms; 2: 60.5 HU, 50 ms" in card
    assert "(on cpu, 4 validation slices of 64x64)" in card
    old = card_text(read_metadata(tiny_checkpoint(tmp_path / "old")))
    assert "--steps auto uses them too, since its model.json has no steps curve" in old
    assert "Steps curve:" not in old
    np.testing.assert_equal(len(card.splitlines()), len(old.splitlines()) + 1)
