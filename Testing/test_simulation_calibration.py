"""Dose calibration: to a target noise, to a real (here: simulated) uLDCT, and the fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.simulation import PhysicsParams, estimate_noise, noise_index, simulate_volume
from ipv2.simulation.calibrate import fit_i0
from ipv2.simulation.phantoms import chest_slice

torch.set_num_threads(2)


def _chest_volume(size: int = 256, depth: int = 3) -> Volume:
    return Volume(np.repeat(chest_slice(size)[None], depth, axis=0), spacing=(0.8, 0.8, 2.5))


def test_match_noise_lands_within_five_percent() -> None:
    vol = _chest_volume()
    _sim, report = simulate_volume(vol, match_noise_hu=60.0, region="soft")
    cal = report["calibration"]
    achieved = cal["simulated_noise_hu_full_volume"]
    assert abs(achieved / 60.0 - 1.0) < 0.05, cal
    assert cal["converged"]
    # the report's own soft-tissue figure agrees and the dose is the fitted one
    assert report["i0"] == pytest.approx(cal["fitted_i0"])
    assert report["dose_fraction"] == pytest.approx(cal["fitted_i0"] / report["i0_full"])
    assert abs(report["regions"]["soft"]["noise_std_hu"] / 60.0 - 1.0) < 0.10


@pytest.mark.slow
def test_match_uldct_recovers_an_unknown_dose() -> None:
    vol = _chest_volume(depth=4)
    secret = 0.035
    uldct, _ = simulate_volume(vol, PhysicsParams(dose_fraction=secret), seed=123)
    _, report = simulate_volume(vol, match_uldct=uldct, seed=0)
    fitted = report["calibration"]["fitted_dose_fraction"]
    assert abs(fitted / secret - 1.0) < 0.15, report["calibration"]
    assert report["calibration"]["uldct_noise_index_hu"] > 0


@pytest.mark.slow
@pytest.mark.realdata
def test_match_uldct_on_real_chest(tcia_volume, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    vol = tcia_volume.slices(8, 12)
    secret = 0.02
    uldct, _ = simulate_volume(vol, PhysicsParams(dose_fraction=secret), seed=99)
    _, report = simulate_volume(vol, match_uldct=uldct, seed=0)
    _, by_noise = simulate_volume(vol, match_noise_hu=60.0)
    fitted = report["calibration"]["fitted_dose_fraction"]
    achieved = by_noise["calibration"]["simulated_noise_hu_full_volume"]
    with capsys.disabled():
        print(
            f"\nTCIA match-uldct: true dose {secret}, fitted {fitted:.4f}; "
            f"match-noise 60 HU soft -> {achieved:.1f} HU"
        )
    assert abs(fitted / secret - 1.0) < 0.15
    assert abs(achieved / 60.0 - 1.0) < 0.05


def test_fit_follows_a_power_law_and_reports_unreachable_targets() -> None:
    calls: list[float] = []

    def measure(i0: float) -> float:
        calls.append(i0)
        return 3000.0 / math.sqrt(i0) * (1.0 + 30.0 / i0)  # quantum + a low-count bend

    i0, achieved, ok, history = fit_i0(measure, 40.0, 3000.0)
    assert ok and abs(achieved / 40.0 - 1.0) <= 0.01
    assert measure(i0) == achieved
    assert len(history) <= 6
    _i0, achieved, ok, _ = fit_i0(lambda i: 50.0 + 0.0 * i, 40.0, 3000.0)  # flat: unreachable
    assert not ok
    with pytest.raises(InputError, match="target noise"):
        fit_i0(measure, -1.0, 3000.0)


def test_noise_index_is_proportional_to_noise() -> None:
    rng = np.random.default_rng(0)
    base = np.repeat(chest_slice(128)[None], 2, axis=0)
    mask = np.zeros(base.shape, dtype=bool)
    mask[:, 40:90, 40:90] = True
    white = rng.normal(0.0, 1.0, base.shape).astype(np.float32)
    flat = np.zeros_like(base)
    a = noise_index(flat + 20.0 * white, mask)
    b = noise_index(flat + 40.0 * white, mask)
    assert b / a == pytest.approx(2.0, rel=0.03)
    assert 0.7 * 20.0 < a < 1.05 * 20.0  # an index: a bit below the true std for white noise
    with pytest.raises(InputError, match="noise region"):
        noise_index(flat, np.zeros_like(mask))
    # on the chest itself the estimate finds soft tissue and rises with the noise
    quiet = estimate_noise(base + 5.0 * white, "soft")
    loud = estimate_noise(base + 50.0 * white, "soft")
    assert loud > 5.0 * quiet


def test_calibration_refusals() -> None:
    vol = _chest_volume(96, 1)
    with pytest.raises(InputError, match="physical mode"):
        simulate_volume(vol, mode="reference", match_noise_hu=60.0)
    with pytest.raises(InputError, match="not both"):
        simulate_volume(vol, match_noise_hu=60.0, match_uldct=vol)
    with pytest.raises(InputError, match="ROI"):
        simulate_volume(vol, match_noise_hu=60.0, roi=np.zeros(vol.shape, bool))
