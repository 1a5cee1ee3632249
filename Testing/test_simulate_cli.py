"""``ipv2 simulate`` and ``ipv2 bench simulate`` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ipv2.cli import main
from ipv2.core.volume import Volume
from ipv2.io.volumes import read_volume, write_volume
from ipv2.simulation.phantoms import chest_slice


@pytest.fixture
def ndct(tmp_path: Path) -> Path:
    """A 3-slice chest with padded corners and a non-trivial geometry."""
    arr = np.repeat(chest_slice(128)[None], 3, axis=0)
    yy, xx = np.mgrid[0:128, 0:128] - 64
    arr[:, np.hypot(xx, yy) > 66] = -2048.0
    direction = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    vol = Volume(arr, spacing=(0.8, 0.8, 2.5), origin=(-40.0, 30.0, 100.0), direction=direction)
    return write_volume(vol, tmp_path / "ndct.nrrd")


def test_simulate_writes_volume_and_report(
    ndct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.nrrd"
    code = main(
        [
            "simulate",
            "--ndct",
            str(ndct),
            "--dose",
            "0.05",
            "--seed",
            "3",
            "--out",
            str(out),
            "--events",
            "jsonl",
        ]
    )
    assert code == 0
    src, sim = read_volume(ndct), read_volume(out)
    assert sim.shape == src.shape and sim.grid_differences(src) == []
    assert np.allclose(sim.origin, src.origin)
    pad = src.array == -2048.0
    assert np.array_equal(sim.array[pad], src.array[pad])  # padding stays padding
    assert np.abs(sim.array - src.array)[~pad].mean() > 5.0  # noise was added
    report = json.loads((tmp_path / "sim.json").read_text())
    assert report["mode"] == "physical"
    assert report["dose_fraction"] == pytest.approx(0.05)
    assert report["i0"] == pytest.approx(0.05 * report["i0_full"])
    assert report["seed"] == 3
    events = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 3
    assert events[-1]["event"] == "done" and events[-1]["status"] == "ok"


def test_simulate_refuses_existing_output(
    ndct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.nrrd"
    out.write_text("mine")
    assert main(["simulate", "--ndct", str(ndct), "--out", str(out), "--quiet"]) == 1
    assert out.read_text() == "mine"
    assert "already exists" in capsys.readouterr().err
    other = tmp_path / "other.nii.gz"
    (tmp_path / "other.json").write_text("{}")
    assert main(["simulate", "--ndct", str(ndct), "--out", str(other), "--quiet"]) == 1
    assert not other.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dose", "0"], "positive"),
        (["--dose", "5"], "at most 1"),
        (["--i0", "-3"], "I0"),
        (["--mode", "reference", "--match-noise", "60"], "physical mode"),
        (["--batch-size", "0"], "batch-size"),
    ],
)
def test_simulate_bad_arguments(
    ndct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "bad.nrrd"
    assert main(["simulate", "--ndct", str(ndct), "--out", str(out), "--quiet", *extra]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_every_command_refuses_the_same_dose(
    ndct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One dose bound, one message: phantom, simulate, purify, build-dataset, the library.

    Issue 18 item 10: ``simulate --dose 5`` was accepted (simulated at 500% of the full
    dose) while ``phantom --dose 5`` was refused. Each command now refuses it before
    creating or reading anything, with the words of ``check_dose_fraction``.
    """
    from ipv2.core.errors import InputError
    from ipv2.data.build import BuildConfig
    from ipv2.phantom import make_phantom
    from ipv2.simulation.params import PhysicsParams, check_dose_fraction
    from ipv2.simulation.simulator import Simulator

    with pytest.raises(InputError) as expected:
        check_dose_fraction(5.0)
    message = str(expected.value)
    assert "at most 1" in message and "got 5" in message
    src = tmp_path / "src.csv"
    src.write_text(f"uldct,ndct\n{ndct},{ndct}\n")
    out = tmp_path / "out"
    commands = {
        "phantom": ["phantom", "--out", str(out)],
        "simulate": ["simulate", "--ndct", str(ndct), "--out", str(out) + ".nrrd"],
        "purify": ["purify", "-U", str(ndct), "-N", str(ndct), "--out-dir", str(out)],
        "build-dataset": ["build-dataset", str(src), "--out", str(out)],
    }
    before = sorted(tmp_path.iterdir())
    for name, args in commands.items():
        assert main([*args, "--dose", "5", "--quiet"]) == 1, name
        err = capsys.readouterr().err
        assert err.splitlines() == [f"error: {message}"], (name, err)
        assert sorted(tmp_path.iterdir()) == before, name  # refused before any output
    calls = {
        "Simulator": lambda: Simulator.for_dose(5.0),
        "PhysicsParams": lambda: PhysicsParams(dose_fraction=5.0),
        "make_phantom": lambda: make_phantom(size=32, slices=1, uldct_dose=5.0),
        "BuildConfig": lambda: BuildConfig(dose_fraction=5.0),
    }
    for name, call in calls.items():
        with pytest.raises(InputError) as refused:
            call()
        assert str(refused.value) == message, name
    assert check_dose_fraction(1.0) == 1.0  # the full dose itself is allowed


def test_simulate_match_noise_reports_the_fit(ndct: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit.mha"
    assert (
        main(["simulate", "--ndct", str(ndct), "--match-noise", "50", "--out", str(out), "--quiet"])
        == 0
    )
    report = json.loads((tmp_path / "fit.json").read_text())
    cal = report["calibration"]
    assert cal["method"] == "match-noise" and cal["target_noise_hu"] == 50.0
    assert abs(cal["simulated_noise_hu"] / 50.0 - 1.0) < 0.05
    assert report["dose_fraction"] == pytest.approx(cal["fitted_dose_fraction"])


def test_simulate_nan_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arr = np.repeat(chest_slice(64)[None], 2, axis=0)
    arr[1, 10, 10] = np.nan
    src = write_volume(Volume(arr), tmp_path / "nan.nrrd")
    assert main(["simulate", "--ndct", str(src), "--out", str(tmp_path / "o.nrrd"), "--quiet"]) == 1
    assert "NaN" in capsys.readouterr().err


def test_bench_simulate_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "simulate",
                "--size",
                "64",
                "--batch",
                "2",
                "--repeats",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "s per slice" in err and "speed-up" in err
