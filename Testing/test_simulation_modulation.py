"""Simulation sanity (issue 16, item 6): tube-current modulation along z, the warning for an
input that is low-dose already, and purify's HU plausibility error that names its figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipv2.cli import main
from ipv2.core.volume import Volume
from ipv2.io.volumes import write_volume
from ipv2.simulation.modulation import Modulation
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.phantoms import chest_slice
from ipv2.simulation.regions import region_mask
from ipv2.simulation.volume_sim import simulate_volume

SIZE = 80
PIXEL_MM = 3.5


def _body(semi_x: float, semi_y: float) -> np.ndarray:
    """A soft-tissue ellipse (40 HU) in air, semi-axes as fractions of the image side.

    A little noise (2 HU) keeps the air from being taken for constant scanner padding.
    """
    yy, xx = (np.mgrid[0:SIZE, 0:SIZE] + 0.5) / SIZE - 0.5
    img = np.full((SIZE, SIZE), -1000.0, dtype=np.float32)
    img[(xx / semi_x) ** 2 + (yy / semi_y) ** 2 <= 1.0] = 40.0
    noise = np.random.default_rng(int(semi_x * 100)).normal(0.0, 2.0, img.shape)
    return (img + noise).astype(np.float32)


@pytest.fixture(scope="module")
def slim_and_broad() -> Volume:
    """Two slim slices (a neck) then two broad ones (shoulders): 1.5x wider and deeper."""
    slim, broad = _body(0.27, 0.2), _body(0.42, 0.3)
    arr = np.stack([slim, slim, broad, broad])
    return Volume(arr, spacing=(PIXEL_MM, PIXEL_MM, 5.0))


def _noise_per_slice(original: np.ndarray, simulated: np.ndarray) -> np.ndarray:
    mask = region_mask(original, "soft")
    return np.array(
        [float((s - o)[m].std()) for o, s, m in zip(original, simulated, mask, strict=True)]
    )


def test_modulation_evens_noise_along_z_and_keeps_the_mean_dose(slim_and_broad: Volume) -> None:
    params = PhysicsParams(dose_fraction=0.05)
    flat, flat_report = simulate_volume(
        slim_and_broad, params, seed=1, modulation=Modulation(strength=0.0)
    )
    modulated, report = simulate_volume(slim_and_broad, params, seed=1)  # default: on
    arr = slim_and_broad.array
    flat_noise = _noise_per_slice(arr, flat.array)
    mod_noise = _noise_per_slice(arr, modulated.array)
    flat_spread = flat_noise[2:].mean() / flat_noise[:2].mean()
    mod_spread = mod_noise[2:].mean() / mod_noise[:2].mean()
    # Constant current: the broad slices are far noisier; modulation narrows the gap.
    assert flat_spread > 1.6
    assert mod_spread < 1.0 + 0.6 * (flat_spread - 1.0)
    tcm = report["tube_current_modulation"]
    assert tcm["applied"] is True and tcm["strength"] == pytest.approx(0.5)
    factors = np.array(tcm["factors"])
    assert factors.shape == (4,) and factors[2:].min() > factors[:2].max()
    assert factors.mean() == pytest.approx(1.0, abs=1e-9)  # the series' dose is the one asked
    assert np.mean(tcm["i0_per_slice"]) == pytest.approx(params.incident_photons)
    assert report["i0"] == pytest.approx(params.incident_photons)
    assert report["noise_std_hu_soft_per_slice"] == pytest.approx(list(mod_noise), rel=1e-4)
    assert flat_report["tube_current_modulation"]["factors"] == [1.0] * 4


def test_modulation_is_clamped_and_absent_for_one_slice(slim_and_broad: Volume) -> None:
    narrow = Modulation(strength=1.0, min_factor=0.9, max_factor=1.1)
    _, report = simulate_volume(slim_and_broad, PhysicsParams(), modulation=narrow)
    factors = np.array(report["tube_current_modulation"]["factors"])
    assert factors.min() >= 0.9 - 1e-9 and factors.max() <= 1.1 + 1e-9
    assert factors.mean() == pytest.approx(1.0, abs=1e-9)
    one = Volume(slim_and_broad.array[2:3], spacing=slim_and_broad.spacing)
    _, single = simulate_volume(one, PhysicsParams())
    assert single["tube_current_modulation"]["applied"] is False
    assert single["tube_current_modulation"]["factors"] == [1.0]


def test_noise_fit_finds_the_mean_dose_with_modulation(slim_and_broad: Volume) -> None:
    sim, report = simulate_volume(slim_and_broad, PhysicsParams(), match_noise_hu=60.0)
    cal = report["calibration"]
    assert cal["converged"] and abs(cal["relative_error"]) < 0.02
    tcm = report["tube_current_modulation"]
    assert tcm["applied"] and np.ptp(tcm["factors"]) > 0.2
    assert np.mean(tcm["i0_per_slice"]) == pytest.approx(cal["fitted_i0"])
    measured = float(
        (sim.array - slim_and_broad.array)[region_mask(slim_and_broad.array, "soft")].std()
    )
    assert measured == pytest.approx(60.0, rel=0.15)  # fitted on 4 slices, measured on all


def _chest_volume(tmp_path: Path, name: str, noise_hu: float) -> Path:
    rng = np.random.default_rng(5)
    arr = np.repeat(chest_slice(96)[None], 2, axis=0)
    arr = arr + rng.normal(0.0, noise_hu, arr.shape).astype(np.float32)
    return write_volume(Volume(arr, spacing=(3.0, 3.0, 5.0)), tmp_path / name)


def _simulate_cli(ndct: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ipv2", "simulate", "--ndct", str(ndct), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_simulate_warns_once_when_the_input_looks_low_dose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy = _simulate_cli(_chest_volume(tmp_path, "ld.nrrd", 80.0), tmp_path / "s_ld.nrrd")
    assert noisy.returncode == 0, noisy.stderr
    lines = [ln for ln in noisy.stderr.splitlines() if "looks low-dose" in ln]
    assert len(lines) == 1
    measured = float(re.search(r"measures (\d+) HU", lines[0]).group(1))  # type: ignore[union-attr]
    assert 50 <= measured <= 100  # the 80 HU white noise, read by the noise index
    assert "--match-uldct" in lines[0] and "normal-dose" in lines[0]
    # A normal-dose input (8 HU noise) simulates without it (in-process: the same CLI code).
    ndct = _chest_volume(tmp_path, "nd.nrrd", 8.0)
    assert main(["simulate", "--ndct", str(ndct), "--out", str(tmp_path / "s_nd.nrrd")]) == 0
    assert "looks low-dose" not in capsys.readouterr().err


def test_purify_refuses_an_extremely_noisy_volume_naming_what_it_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    u = _chest_volume(tmp_path, "u.nrrd", 400.0)  # what a far too low simulated dose gives
    n = _chest_volume(tmp_path, "n.nrrd", 5.0)
    code = main(["purify", "-U", str(u), "-N", str(n), "--out-dir", str(tmp_path / "p")])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(r"99% of its voxels lie in \[-\d+, \d+\]", err)
    noise = float(re.search(r"noise is about (\d+) HU", err).group(1))  # type: ignore[union-attr]
    assert 300 <= noise <= 500
    assert "simulated low-dose" in err and "--match-uldct" in err
    assert not (tmp_path / "p").exists()


def test_build_dataset_takes_the_modulation_option(slim_and_broad: Volume, tmp_path: Path) -> None:
    """build-dataset simulates Module 2 with the same per-slice dose as simulate and purify."""
    write_volume(slim_and_broad, tmp_path / "n.nrrd")
    write_volume(slim_and_broad, tmp_path / "u.nrrd")
    (tmp_path / "pairs.csv").write_text("uldct,ndct,split,case\nu.nrrd,n.nrrd,train,c0\n")
    common = ["build-dataset", str(tmp_path / "pairs.csv"), "--modules", "1,2", "--dose", "0.05"]
    assert main([*common, "--out", str(tmp_path / "on"), "--quiet"]) == 0
    off = [*common, "--out", str(tmp_path / "off"), "--tube-current-modulation", "off"]
    assert main([*off, "--quiet"]) == 0

    def spread(root: Path) -> tuple[float, float | None]:
        manifest = json.loads((root / "manifest.json").read_text())
        noise = _noise_per_slice(slim_and_broad.array, np.load(root / "train" / "sim" / "c0.npy"))
        return float(noise[2:].mean() / noise[:2].mean()), manifest["parameters"][
            "tube_current_modulation"
        ]

    ratio_on, strength_on = spread(tmp_path / "on")
    ratio_off, strength_off = spread(tmp_path / "off")
    assert (strength_on, strength_off) == (0.5, 0.0)
    assert ratio_off > 1.15 * ratio_on  # constant dose: the broad slices come out noisier
