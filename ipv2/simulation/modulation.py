"""Tube-current modulation along z: the photons per slice follow the patient's attenuation.

Real scanners do not image every slice with the same tube current. Automatic tube-current
modulation (ATCM) reads the patient's attenuation from the localizer radiograph (the
scout: a frontal and/or a lateral projection) and raises the current where the patient
attenuates more (shoulders, liver, pelvis) and lowers it where it attenuates less (the
aerated lungs, the neck). Simulating every slice with one I0 therefore gives shoulder and
abdomen slices far more noise than a real scan of the same dose (issue 16, item 6).

Model (z-modulation only; the in-plane, angular modulation is not simulated):

- Attenuation of slice z: the quantum-noise variance of a reconstructed pixel is, up to
  a constant, the sum over views of ``exp(p) / I0`` for the rays through it (``p`` the
  line integral). Averaged over the patient's pixels this is, per view, the mean of
  ``exp(p)`` over rays weighted by how many patient pixels each ray crosses. Two
  orthogonal views stand in for all (the scanner's frontal and lateral localizers), from
  the slice's line integrals (mu times the pixel size, summed along the rows and along
  the columns; scanner padding as air):
  ``A_z = (A_frontal + A_lateral) / 2``, kept in the log domain. On the A0001 series the
  logarithm of ``A_z`` follows the simulated constant-dose noise variance per slice with
  a correlation of 0.95; the thickest ray alone (a scout's peak) followed it poorly.
- Tube current: ``I0_z ∝ A_z ** strength``. Strength 1 keeps the quantum noise at the
  slice centre constant (the aim of noise-index systems such as GE AutomA and Canon/
  Toshiba SureExposure); strength 0 is a constant current; Siemens CARE Dose4D's
  adaptation curves lie between these two limits, letting noise rise somewhat in the
  more attenuating regions (Kalra et al., Radiology 2004;233:649-657, and the vendor's
  manual describe both limits). The default, 0.5, is halfway between them in log terms:
  noise std then grows as ``A_z ** 0.25`` instead of ``A_z ** 0.5``.
- Limits: scanners only modulate within a current range: a prescribed minimum and
  maximum mA for noise-index systems, the generator's range for all. The factors are
  clamped to ``[0.25, 4]`` times the series mean by default (a 16-fold range), which
  bounds the model where the attenuation estimate is extreme (metal, arms in the field).
- Normalisation: the factors average to exactly 1 over the volume (after the clamp), so
  the mean I0, hence the series' dose, is the one asked for (``--dose`` keeps meaning
  the dose of the series).

A single slice has nothing to modulate against; its factor is 1.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from ipv2.core.errors import InputError

FloatArray = npt.NDArray[np.float64]

DEFAULT_STRENGTH = 0.5
DEFAULT_LIMITS = (0.25, 4.0)
_BODY_MIN_HU = -500.0  # patient (and table) pixels, as the noise regions' body band


def check_strength(value: float) -> float:
    """A modulation strength in [0, 1], or the one-line error (0 means constant current)."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(
            "tube-current modulation strength must be between 0 (constant current) and 1 "
            f"(constant noise), got {value:g}"
        )
    return float(value)


@dataclass(frozen=True)
class Modulation:
    """How strongly the tube current follows attenuation, and its clamp around the mean."""

    strength: float = DEFAULT_STRENGTH
    min_factor: float = DEFAULT_LIMITS[0]
    max_factor: float = DEFAULT_LIMITS[1]

    def __post_init__(self) -> None:
        check_strength(self.strength)
        if not (0.0 < self.min_factor <= 1.0 <= self.max_factor < math.inf):
            raise InputError(
                "tube-current limits must satisfy 0 < minimum <= 1 <= maximum (factors of "
                f"the mean current), got {self.min_factor:g} and {self.max_factor:g}"
            )

    @property
    def enabled(self) -> bool:
        return self.strength > 0.0


def scout_attenuation(
    hu: npt.ArrayLike,
    pixel_mm: float,
    *,
    mu_water: float,
    padding: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """``log A_z`` per slice (see the module docstring) of HU slices (B, H, W).

    Per view (rows, then columns): ``log(sum_t c(t) exp(p(t)) / sum_t c(t))`` with ``p(t)``
    the line integral of ray ``t`` and ``c(t)`` the patient pixels it crosses; the two
    views are averaged in the linear domain. Computed in the log domain (line integrals
    through shoulders reach 10 and more).
    """
    arr = np.asarray(hu, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    mu = np.clip(mu_water * pixel_mm * (1.0 + arr / 1000.0), 0.0, None)
    body = arr > _BODY_MIN_HU
    if padding is not None:
        pad = np.asarray(padding, dtype=bool).reshape(mu.shape)
        mu[pad] = 0.0  # padding is not anatomy
        body &= ~pad
    views = []
    for axis in (1, 2):  # frontal view (sums down the columns) and lateral (along the rows)
        p = mu.sum(axis=axis)
        chords = body.sum(axis=axis).astype(np.float64)
        total = chords.sum(axis=1)
        weights = np.where(total[:, None] > 0, chords, 1.0)  # no patient: plain mean
        views.append(logsumexp(p, b=weights, axis=1) - np.log(weights.sum(axis=1)))
    return np.asarray(np.logaddexp(views[0], views[1]) - math.log(2.0), dtype=np.float64)


def modulation_factors(log_attenuation: npt.ArrayLike, modulation: Modulation) -> FloatArray:
    """Per-slice I0 factors, mean exactly 1, within the modulation's limits.

    ``factor_z = clip(c * A_z ** strength, min, max)`` with ``c`` found by bisection so the
    factors average to 1 (the clamped mean grows monotonically with ``c``).
    """
    log_a = np.asarray(log_attenuation, dtype=np.float64).ravel()
    if log_a.size <= 1 or not modulation.enabled:
        return np.ones(log_a.size)
    rel = modulation.strength * (log_a - log_a.mean())
    raw = np.exp(rel - rel.max())  # <= 1, no overflow

    def clamped(log_c: float) -> FloatArray:
        return np.clip(np.exp(log_c) * raw, modulation.min_factor, modulation.max_factor)

    lo, hi = -1.0, -1.0
    while clamped(lo).mean() > 1.0:
        lo -= 10.0
    hi = lo
    while clamped(hi).mean() < 1.0:
        hi += 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if clamped(mid).mean() < 1.0:
            lo = mid
        else:
            hi = mid
    factors = clamped(0.5 * (lo + hi))
    return factors / factors.mean()  # removes the last bisection rounding (~1e-15)


def parse_strength(text: str) -> float:
    """``--tube-current-modulation`` value: ``on`` (the default strength), ``off`` or 0..1."""
    word = text.strip().lower()
    if word == "on":
        return DEFAULT_STRENGTH
    if word == "off":
        return 0.0
    try:
        value = float(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected on, off or a strength between 0 and 1, got {text!r}"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(
            f"the strength must be between 0 (constant current) and 1 (constant noise), got {text}"
        )
    return value


def add_modulation_option(parser: argparse.ArgumentParser) -> None:
    """``--tube-current-modulation``, shared by every command that simulates whole volumes.

    It lives with what it configures (as ``--device`` lives in ``core.devices``), so
    ``simulate`` and ``purify`` offer the same words.
    """
    parser.add_argument(
        "--tube-current-modulation",
        dest="tube_current_modulation",
        type=parse_strength,
        default=DEFAULT_STRENGTH,
        metavar="on|off|STRENGTH",
        help="dose per slice follows the patient's attenuation as a scanner's automatic "
        "tube-current modulation does: I0 per slice proportional to attenuation^STRENGTH "
        f"(0 = constant dose, 1 = constant noise; 'on' = {DEFAULT_STRENGTH:g}, the default), "
        f"within {DEFAULT_LIMITS[0]:g}..{DEFAULT_LIMITS[1]:g} times the mean; the mean dose "
        "stays the requested one",
    )
