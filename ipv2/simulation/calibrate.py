"""Dose calibration: choose I0 so the simulated noise matches a target.

Three ways to set the dose (method.md section 4, issue #4 item 4):

(a) directly, by dose fraction or I0 (:class:`PhysicsParams`);
(b) :func:`calibrate_to_noise`: the standard deviation of the simulated noise inside a
    region (lung, soft tissue, body or a user ROI) equals a target in HU;
(c) :func:`calibrate_to_uldct`: the noise index (:mod:`ipv2.simulation.noise_estimate`)
    of the simulation equals that of a real ultra-low-dose scan of the same patient,
    each measured in its own flat regions (the two scans are not aligned).

Quantum noise falls as I0^-1/2, and electronic noise and the count floor bend that at
low counts, so the fit is a secant iteration on log(noise) against log(I0) starting from
the slope -1/2. Calibration simulates a few slices spread through the volume (with the
same per-slice seeds as the final run) to stay fast; the final run's full-volume figure
goes into the report beside the fitted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.simulation.noise_estimate import estimate_noise
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.physics import SliceOptions, simulate_slices, simulate_slices_with_noise
from ipv2.simulation.regions import erosion_for, region_mask

BoolArray = npt.NDArray[np.bool_]
I0_BOUNDS = (1.0, 1e9)


@dataclass(frozen=True)
class Calibration:
    """Outcome of a fit: the photons per ray found and how close the noise came."""

    method: str
    region: str
    i0: float
    dose_fraction: float
    target_hu: float
    achieved_hu: float
    converged: bool
    slices: tuple[int, ...]
    history: tuple[tuple[float, float], ...] = field(default=())

    @property
    def relative_error(self) -> float:
        return self.achieved_hu / self.target_hu - 1.0

    def summary(self) -> dict[str, object]:
        return {
            "method": self.method,
            "region": self.region,
            "fitted_i0": self.i0,
            "fitted_dose_fraction": self.dose_fraction,
            "target_noise_hu": self.target_hu,
            "simulated_noise_hu": self.achieved_hu,
            "relative_error": self.relative_error,
            "converged": self.converged,
            "calibration_slices": list(self.slices),
            "iterations": [{"i0": i, "noise_hu": s} for i, s in self.history],
        }


def fit_i0(
    measure: Callable[[float], float],
    target: float,
    i0_start: float,
    *,
    rel_tol: float = 0.01,
    max_iter: int = 10,
) -> tuple[float, float, bool, list[tuple[float, float]]]:
    """Find I0 with ``measure(I0) == target``; returns (I0, achieved, converged, history)."""
    if not (math.isfinite(target) and target > 0):
        raise InputError(f"target noise must be a positive number of HU, got {target}")
    lo, hi = (math.log(b) for b in I0_BOUNDS)
    log_i = min(max(math.log(i0_start), lo), hi)
    slope = -0.5
    history: list[tuple[float, float]] = []
    best = (math.inf, math.exp(log_i), math.nan)
    for _ in range(max_iter):
        i0 = math.exp(log_i)
        achieved = float(measure(i0))
        if not (math.isfinite(achieved) and achieved > 0):
            raise InputError("the simulated noise could not be measured in the chosen region")
        history.append((i0, achieved))
        err = abs(achieved / target - 1.0)
        if err < best[0]:
            best = (err, i0, achieved)
        if err <= rel_tol:
            return i0, achieved, True, history
        if len(history) >= 2:
            (i_a, s_a), (i_b, s_b) = history[-2], history[-1]
            if abs(math.log(i_b / i_a)) > 1e-6:
                est = (math.log(s_b) - math.log(s_a)) / (math.log(i_b) - math.log(i_a))
                slope = min(max(est, -1.5), -0.2)
        new = log_i + (math.log(target) - math.log(achieved)) / slope
        new = min(max(new, lo), hi)
        if abs(new - log_i) < 1e-9:  # pinned at a bound: the target is out of reach
            break
        log_i = new
    return best[1], best[2], False, history


def spread_slices(candidates: npt.NDArray[np.int_], count: int) -> tuple[int, ...]:
    """Up to ``count`` slice indices evenly spread over ``candidates``."""
    if candidates.size == 0:
        return ()
    picks = np.unique(np.round(np.linspace(0, candidates.size - 1, count)).astype(int))
    return tuple(int(candidates[p]) for p in picks)


def _min_pixels(shape: tuple[int, ...]) -> int:
    """Pixels a slice's region needs to be measured: 100 at 512 px, fewer on coarse grids."""
    return max(25, int(100 * shape[-1] * shape[-2] / 512**2))


def _picked(
    hu: npt.NDArray[np.float32],
    padding: BoolArray | None,
    slices: tuple[int, ...],
    *,
    seed: int,
    device: str,
    batch_size: int,
    i0_factors: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float32], SliceOptions]:
    """The measured slices and how to simulate them (their own volume indices keep the
    per-slice noise seeds of a whole-volume run, and their own tube-current factors, so
    the fit finds the *mean* I0 of the modulated run)."""
    idx = list(slices)
    options: SliceOptions = {
        "seed": seed,
        "padding": None if padding is None else padding[idx],
        "device": device,
        "batch_size": batch_size,
        "indices": idx,
    }
    if i0_factors is not None:
        options["i0_factors"] = [float(f) for f in np.asarray(i0_factors, dtype=float)[idx]]
    return hu[idx], options


def _usable_slices(mask: BoolArray, count: int, min_pixels: int = 100) -> tuple[int, ...]:
    per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return spread_slices(np.flatnonzero(per_slice >= min_pixels), count)


def calibrate_to_noise(
    hu: npt.NDArray[np.float32],
    pixel_mm: float,
    params: PhysicsParams,
    *,
    target_hu: float,
    region: str = "soft",
    roi: BoolArray | None = None,
    padding: BoolArray | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    max_slices: int = 4,
    i0_factors: npt.ArrayLike | None = None,
) -> Calibration:
    """Fit I0 so the simulated noise std in ``region`` (or ``roi``) is ``target_hu``.

    The noise is the simulation minus its noise-free counterpart, so anatomy inside the
    region does not count as noise; the input's own noise adds to it in quadrature.
    ``i0_factors`` (one per slice of ``hu``, mean 1) apply tube-current modulation.
    """
    mask = roi if roi is not None else region_mask(hu, region, padding)
    name = "roi" if roi is not None else region
    slices = _usable_slices(mask, max_slices)
    if not slices:
        raise InputError(
            f"no slice has enough voxels in the {name} region to measure noise; choose "
            "another region or give an ROI"
        )
    sub, run = _picked(
        hu,
        padding,
        slices,
        seed=seed,
        device=device,
        batch_size=batch_size,
        i0_factors=i0_factors,
    )
    sub_mask = mask[list(slices)]

    def measure(i0: float) -> float:
        _, noise = simulate_slices_with_noise(sub, pixel_mm, params.with_i0(i0), **run)
        return float(np.std(noise[sub_mask]))

    i0, achieved, ok, history = fit_i0(measure, target_hu, params.incident_photons)
    return Calibration(
        method="match-noise",
        region=name,
        i0=i0,
        dose_fraction=i0 / params.i0_full,
        target_hu=float(target_hu),
        achieved_hu=achieved,
        converged=ok,
        slices=slices,
        history=tuple(history),
    )


def calibrate_to_uldct(
    hu: npt.NDArray[np.float32],
    pixel_mm: float,
    params: PhysicsParams,
    *,
    uldct_hu: npt.NDArray[np.float32],
    uldct_padding: BoolArray | None = None,
    region: str = "soft",
    padding: BoolArray | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    max_slices: int = 4,
    i0_factors: npt.ArrayLike | None = None,
) -> tuple[Calibration, float]:
    """Fit I0 so the simulation's noise index matches the real uLDCT's.

    Returns the calibration and the uLDCT's measured noise index (HU). ``i0_factors``
    as in :func:`calibrate_to_noise`.
    """
    erosion = erosion_for(uldct_hu.shape)
    u_mask = region_mask(uldct_hu, region, uldct_padding, smoothing_px=3.0, erosion_px=erosion)
    u_slices = _usable_slices(u_mask, 2 * max_slices, _min_pixels(uldct_hu.shape))
    if not u_slices:
        raise InputError(
            f"the ultra-low-dose volume has no usable {region} region to measure its noise; "
            "check it is a chest CT in HU or choose another region"
        )
    u_idx = list(u_slices)
    u_pad = None if uldct_padding is None else uldct_padding[u_idx]
    target = estimate_noise(uldct_hu[u_idx], region, u_pad, what="ultra-low-dose volume")

    n_mask = region_mask(hu, region, padding, smoothing_px=3.0, erosion_px=erosion_for(hu.shape))
    slices = _usable_slices(n_mask, 2 * max_slices, _min_pixels(hu.shape))
    if not slices:
        raise InputError(f"the normal-dose volume has no usable {region} region")
    sub, run = _picked(
        hu,
        padding,
        slices,
        seed=seed,
        device=device,
        batch_size=batch_size,
        i0_factors=i0_factors,
    )

    def measure(i0: float) -> float:
        sim = simulate_slices(sub, pixel_mm, params.with_i0(i0), **run)
        return estimate_noise(sim, region, run.get("padding"), what="simulation")

    i0, achieved, ok, history = fit_i0(measure, target, params.incident_photons)
    calibration = Calibration(
        method="match-uldct",
        region=region,
        i0=i0,
        dose_fraction=i0 / params.i0_full,
        target_hu=target,
        achieved_hu=achieved,
        converged=ok,
        slices=slices,
        history=tuple(history),
    )
    return calibration, target
