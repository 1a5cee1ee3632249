"""Simulate a whole volume: validation, optional dose calibration, batches, the report.

This is what ``ipv2 simulate`` and the dataset builder call. The output keeps the input's
grid and geometry exactly; scanner padding stays padding. The report records everything
needed to reproduce and judge the result: mode, dose and I0 (fitted or given), the
physics constants, the seed, and the noise and mean HU actually obtained in air, lung and
soft tissue, per region and per slice in soft tissue.

The photons per ray follow the patient's attenuation slice by slice (tube-current
modulation, :mod:`ipv2.simulation.modulation`; on by default here, because whole volumes
are real series and real scanners modulate; ``Modulation(strength=0)`` turns it off).
The mean I0 over the slices is the requested dose; the report lists each slice's factor.
The phantom, the demo and the training pairs simulate slices directly and stay at a
constant dose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.core.devices import resolve_device
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.padding import check_ct_range, detect_padding
from ipv2.core.volume import Volume
from ipv2.simulation.calibrate import calibrate_to_noise, calibrate_to_uldct
from ipv2.simulation.modulation import Modulation, modulation_factors, scout_attenuation
from ipv2.simulation.noise_estimate import low_dose_warning
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.physics import simulate_slices
from ipv2.simulation.reference import reference_flux, reference_simulate_slices
from ipv2.simulation.regions import check_roi, region_mask

MODES = ("physical", "reference")
_AIR_BAND = (-1100.0, -900.0)


def simulate_volume(
    volume: Volume,
    params: PhysicsParams | None = None,
    *,
    mode: str = "physical",
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    reporter: Reporter | None = None,
    match_noise_hu: float | None = None,
    match_uldct: Volume | None = None,
    region: str = "soft",
    roi: npt.ArrayLike | None = None,
    modulation: Modulation | None = None,
) -> tuple[Volume, dict[str, Any]]:
    """Low-dose version of ``volume`` and a JSON-ready report (see the module docstring).

    ``match_noise_hu`` fits the dose so the simulated noise std in ``region`` (or ``roi``)
    equals it; ``match_uldct`` fits it to a real ultra-low-dose scan's noise. Both need
    the physical mode; without them the dose comes from ``params``. ``modulation``
    (default: :class:`Modulation`'s defaults) sets the per-slice tube current; fits then
    find the mean I0 with the modulation applied.
    """
    rep = reporter if reporter is not None else Reporter()
    params = params if params is not None else PhysicsParams()
    if mode not in MODES:
        raise InputError(f"unknown simulation mode {mode!r}; choose physical or reference")
    if match_noise_hu is not None and match_uldct is not None:
        raise InputError("give either a target noise or an ultra-low-dose volume, not both")
    calibrating = match_noise_hu is not None or match_uldct is not None
    if calibrating and mode != "physical":
        raise InputError(
            "dose calibration needs the physical mode; the reference mode reproduces the "
            "authors' fixed flux (2e5 x 0.1377) and has no dose to fit"
        )
    arr = volume.array
    padding = detect_padding(arr)
    check_ct_range(arr, padding.mask, "the normal-dose volume")
    pad = padding.mask if padding.found else None
    pixel_mm = volume.pixel_size_mm
    dev = str(resolve_device(device, allow_mps=False))
    roi_mask = None if roi is None else check_roi(roi, arr.shape)
    input_noise, warning = low_dose_warning(arr, pad)
    if warning is not None:
        rep.log(warning, level="warning")
    modulation = modulation if modulation is not None else Modulation()
    tcm = _tube_current(arr, pixel_mm, params, pad=pad, modulation=modulation, mode=mode)
    factors = tcm.pop("_factors")

    report: dict[str, Any] = {
        "mode": mode,
        "seed": int(seed),
        "device": dev,
        "pixel_mm": pixel_mm,
        "shape_zyx": list(arr.shape),
        "padding": padding.summary(),
        "input_noise_index_hu_soft": input_noise,
    }
    calib_report: dict[str, Any] | None = None
    if match_noise_hu is not None:
        rep.log(
            f"fitting the dose to {match_noise_hu:g} HU noise in {region if roi is None else 'the ROI'}"
        )
        cal = calibrate_to_noise(
            arr,
            pixel_mm,
            params,
            target_hu=float(match_noise_hu),
            region=region,
            roi=roi_mask,
            padding=pad,
            seed=seed,
            device=dev,
            batch_size=batch_size,
            i0_factors=factors,
        )
        params = params.with_i0(cal.i0)
        calib_report = cal.summary()
    elif match_uldct is not None:
        u_pad = detect_padding(match_uldct.array)
        check_ct_range(match_uldct.array, u_pad.mask, "the ultra-low-dose volume")
        rel = abs(match_uldct.pixel_size_mm / pixel_mm - 1.0)
        if rel > 0.05:
            rep.log(
                f"warning: the uLDCT pixel size ({match_uldct.pixel_size_mm:.3f} mm) differs "
                f"from the NDCT's ({pixel_mm:.3f} mm); noise depends on it, so the fit is rough",
                level="warning",
            )
        rep.log(f"fitting the dose to the ultra-low-dose volume's noise in {region}")
        cal, measured = calibrate_to_uldct(
            arr,
            pixel_mm,
            params,
            uldct_hu=match_uldct.array,
            uldct_padding=u_pad.mask if u_pad.found else None,
            region=region,
            padding=pad,
            seed=seed,
            device=dev,
            batch_size=batch_size,
            i0_factors=factors,
        )
        params = params.with_i0(cal.i0)
        calib_report = {**cal.summary(), "uldct_noise_index_hu": measured}
    if calib_report is not None:
        report["calibration"] = calib_report
        rep.metric("fitted_dose_fraction", float(calib_report["fitted_dose_fraction"]))

    def progress(done: int, total: int) -> None:
        rep.progress("simulate", done, total)

    rep.progress("simulate", 0, volume.depth)
    if mode == "physical":
        sim = simulate_slices(
            arr,
            pixel_mm,
            params,
            seed=seed,
            padding=pad,
            device=dev,
            batch_size=batch_size,
            progress=progress,
            i0_factors=factors,
        )
        report.update(params.summary())
        report["n_views"] = params.n_views or max(arr.shape[1:])
        tcm["i0_per_slice"] = [params.incident_photons * f for f in tcm["factors"]]
    else:
        sim = reference_simulate_slices(arr, seed, pad, progress=progress)
        report.update(
            {
                "reference_flux": reference_flux(),
                "note": "authors' script behaviour (min-max normalised, 8-bit rescaled, "
                "mapped back to each slice's HU range); not a physical dose",
            }
        )
    report["tube_current_modulation"] = tcm
    report["regions"] = region_statistics(arr, sim, pad)
    report["noise_std_hu_soft_per_slice"] = per_slice_noise(arr, sim, pad)
    if calib_report is not None and match_noise_hu is not None:
        mask = roi_mask if roi_mask is not None else region_mask(arr, region, pad)
        achieved = float(np.std((sim - arr)[mask])) if mask.any() else float("nan")
        calib_report["simulated_noise_hu_full_volume"] = achieved
    for name, stats in report["regions"].items():
        if stats.get("noise_std_hu") is not None:
            rep.metric(f"noise_std_hu_{name}", stats["noise_std_hu"])
    return volume.with_array(sim), report


def _tube_current(
    arr: npt.NDArray[np.float32],
    pixel_mm: float,
    params: PhysicsParams,
    *,
    pad: npt.NDArray[np.bool_] | None,
    modulation: Modulation,
    mode: str,
) -> dict[str, Any]:
    """Per-slice I0 factors (under ``_factors``) and their report entry."""
    entry: dict[str, Any] = {
        "strength": modulation.strength,
        "limits_of_mean": [modulation.min_factor, modulation.max_factor],
    }
    depth = arr.shape[0]
    if mode != "physical" or depth == 1 or not modulation.enabled:
        why = (
            "the reference mode has one fixed flux"
            if mode != "physical"
            else "a single slice has nothing to modulate against"
            if depth == 1
            else "turned off: constant tube current"
        )
        return {**entry, "applied": False, "note": why, "factors": [1.0] * depth, "_factors": None}
    log_a = scout_attenuation(arr, pixel_mm, mu_water=params.mu_water, padding=pad)
    factors = modulation_factors(log_a, modulation)
    return {
        **entry,
        "applied": True,
        "note": "I0 per slice proportional to the scout attenuation to the power 'strength', "
        "clamped to 'limits_of_mean' times the mean; the mean factor is 1 (the requested dose)",
        "scout_log_attenuation": [round(float(v), 4) for v in log_a],
        "factors": [float(f) for f in factors],
        "_factors": [float(f) for f in factors],
    }


def per_slice_noise(
    original: npt.NDArray[np.float32],
    simulated: npt.NDArray[np.float32],
    padding: npt.NDArray[np.bool_] | None,
) -> list[float | None]:
    """Std of (simulated - original) in each slice's soft tissue (None where it has none)."""
    mask = region_mask(original, "soft", padding)
    diff = simulated - original
    return [float(d[m].std()) if m.sum() >= 25 else None for d, m in zip(diff, mask, strict=True)]


def region_statistics(
    original: npt.NDArray[np.float32],
    simulated: npt.NDArray[np.float32],
    padding: npt.NDArray[np.bool_] | None,
) -> dict[str, dict[str, float | int | None]]:
    """Mean HU before/after and std of (simulated - original) in air, lung, soft tissue."""
    masks = {
        "lung": region_mask(original, "lung", padding),
        "soft": region_mask(original, "soft", padding),
        "air": _air_mask(original, padding),
    }
    diff = simulated - original
    out: dict[str, dict[str, float | int | None]] = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        if n == 0:
            out[name] = {
                "voxels": 0,
                "input_mean_hu": None,
                "output_mean_hu": None,
                "noise_std_hu": None,
            }
            continue
        out[name] = {
            "voxels": n,
            "input_mean_hu": float(original[mask].mean()),
            "output_mean_hu": float(simulated[mask].mean()),
            "noise_std_hu": float(diff[mask].std()),
        }
    return out


def _air_mask(
    original: npt.NDArray[np.float32], padding: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.bool_]:
    """Air outside the patient: near -1000 HU, not padding, eroded (off the skin line)."""
    mask = (original > _AIR_BAND[0]) & (original < _AIR_BAND[1])
    if padding is not None:
        mask &= ~padding
    body_free = ~region_mask(original, "body", padding, erosion_px=0)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_erosion(mask & body_free, structure=structure, iterations=5)
    return np.asarray(mask, dtype=bool)
