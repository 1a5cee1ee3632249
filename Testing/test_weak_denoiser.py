"""Module 3: the weak denoiser trained on (sim(N), N) lowers lung noise in the phantom's uLDCT."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.inference.weak_denoiser import weak_denoise
from ipv2.phantom import PhantomCase, make_phantom
from ipv2.training import TrainConfig, train

torch.set_num_threads(1)
SIZE, SLICES = 64, 6


def lung_noise(
    image: npt.NDArray[np.float32], clean: npt.NDArray[np.float32], lung: npt.NDArray[np.bool_]
) -> float:
    inner = ndimage.binary_erosion(lung, np.ones((1, 3, 3), bool))
    return float(np.std((image - clean)[inner]))


class Simulator:
    """sim(N) through ipv2.simulation, its dose calibrated once so the simulated lung noise
    matches the noise measured in a phantom uLDCT (method.md section 4, "calibration").

    Without ipv2.simulation a stand-in (white noise blurred by 0.8 px, same lung noise) is
    used; it is deliberately not the phantom's own noise model either, so the test still
    asks the network to generalise from simulated to "real" noise as Module 3 does.
    """

    def __init__(self, reference: PhantomCase) -> None:
        self.target = lung_noise(
            reference.uldct.array, reference.clean_ld.array, reference.masks_ld.lung
        )
        self.lowdose = importlib.import_module("ipv2.simulation")
        self.dose = None
        if hasattr(self.lowdose, "calibrate_to_noise"):
            ndct = reference.ndct
            cal = self.lowdose.calibrate_to_noise(
                ndct.array, ndct.pixel_size_mm, self.lowdose.PhysicsParams(), target_hu=self.target,
                roi=reference.masks_ref.lung,
            )  # fmt: skip
            self.dose = cal.dose_fraction

    def __call__(self, ndct: Volume, seed: int) -> npt.NDArray[np.float32]:
        if self.dose is not None:
            params = self.lowdose.PhysicsParams(dose_fraction=self.dose)
            return np.asarray(
                self.lowdose.simulate_slices(ndct.array, ndct.pixel_size_mm, params, seed=seed),
                np.float32,
            )
        rng = np.random.default_rng(seed)
        noise = ndimage.gaussian_filter(rng.standard_normal(ndct.shape), (0, 0.8, 0.8))
        return (ndct.array + noise / noise.std() * self.target).astype(np.float32)


def phantom_dataset(root: Path) -> Path:
    simulate: Simulator | None = None
    for split, seeds in (("train", (1, 2, 3)), ("val", (4,))):
        for seed in seeds:
            case = make_phantom(size=SIZE, slices=SLICES, seed=seed)
            simulate = simulate or Simulator(case)
            for kind, arr in (("ndct", case.ndct.array), ("sim", simulate(case.ndct, seed))):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                np.save(root / split / kind / f"p{seed}.npy", arr)
    manifest = {"format": "ipv2-dataset", "format_version": 1, "strategy": "ipv2",
                "modules": [2], "window": [-1024.0, 1024.0], "cases": []}  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.slow
def test_weak_denoiser_lowers_lung_noise_of_real_style_uldct(tmp_path: Path) -> None:
    data = phantom_dataset(tmp_path / "ds")
    cfg = TrainConfig(
        data=str(data), output=str(tmp_path / "weak"), model="regressor",
        model_params={"width": 24}, scheme="regression", weak_denoiser=True, epochs=40,
        batch_size=4, lr=1e-3, crop=32, flips=True, val_every=10, val_limit=2, threads=1,
    )  # fmt: skip
    result = train(cfg)
    assert result["status"] == "ok"
    assert (
        json.loads((tmp_path / "weak" / "final" / "model.json").read_text())["role"]
        == "weak-denoiser"
    )

    case = make_phantom(size=SIZE, slices=SLICES, seed=0)  # unseen patient, real-style noise
    denoised = weak_denoise(case.uldct, tmp_path / "weak" / "final")
    assert denoised.shape == case.uldct.shape and denoised.dtype == np.float32
    before = lung_noise(case.uldct.array, case.clean_ld.array, case.masks_ld.lung)
    after = lung_noise(denoised, case.clean_ld.array, case.masks_ld.lung)
    print(
        f"lung noise std (HU) of the phantom uLDCT: {before:.1f} -> {after:.1f} after the weak denoiser"
    )
    assert after < 0.75 * before

    one = weak_denoise(case.uldct.array[2], tmp_path / "weak" / "final", batch_size=1)
    np.testing.assert_allclose(one, denoised[2], atol=1e-3)


def test_weak_denoise_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        weak_denoise(np.zeros((2, 2, 2, 2), np.float32), tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        weak_denoise(np.zeros((8, 8), np.float32), tmp_path / "missing")


def test_weak_requires_the_regression_scheme(tmp_path: Path) -> None:
    data = phantom_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match="regression"):
        train(
            TrainConfig(
                data=str(data),
                output=str(tmp_path / "w"),
                model="unet",
                scheme="flow",
                weak_denoiser=True,
            )
        )
