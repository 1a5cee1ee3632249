"""Physical low-dose simulation of HU slices (IPv2 Module 2, method.md section 4).

Per slice: HU -> linear attenuation ``mu = mu_water (1 + HU/1000)`` per mm, times the pixel
size so line integrals are dimensionless; parallel-beam projection ``p``; expected counts
``I0 exp(-p)``; Poisson counting plus Gaussian electronic noise; counts floored before the
log; filtered back-projection; back to HU. Scanner padding is replaced by air before
projecting (it is not anatomy and must not attenuate) and restored afterwards.

Noise is drawn per slice from a generator seeded by (seed, slice index), so a slice's
result does not depend on the batch size or on which other slices are simulated with it
(up to the float rounding of batched projections, a fraction of an HU).
The same code runs on CUDA; CPU and CUDA draw different (equally valid) noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt
import torch

from ipv2.core.devices import resolve_device
from ipv2.core.errors import InputError
from ipv2.simulation.params import PhysicsParams
from ipv2.simulation.projector import ParallelGeometry, Projector, get_projector

if TYPE_CHECKING:
    from typing_extensions import Unpack

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
ProgressFn = Callable[[int, int], None]

AIR_HU = -1000.0


def slice_seed(seed: int, index: int) -> int:
    """A 63-bit torch seed for slice ``index`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


@dataclass(frozen=True)
class BatchResult:
    """Simulated HU slices and, when asked for, the noise image alone (both (B, H, W))."""

    simulated: torch.Tensor
    noise: torch.Tensor | None


def _noisy_line_integrals(
    p: torch.Tensor, params: PhysicsParams, seeds: Sequence[int], i0_factors: Sequence[float]
) -> torch.Tensor:
    """Line integrals after Poisson + electronic noise and the floored log.

    Slice ``b`` is imaged with ``params.incident_photons * i0_factors[b]`` photons per ray
    (tube-current modulation, :mod:`ipv2.simulation.modulation`).
    """
    sigma_e = float(np.sqrt(params.electronic_noise_var))
    out = torch.empty_like(p)
    for b, s in enumerate(seeds):
        i0 = params.incident_photons * float(i0_factors[b])
        gen = torch.Generator(device=p.device)
        gen.manual_seed(s)
        expected = i0 * torch.exp(-p[b])
        counts = torch.poisson(expected, generator=gen)
        if sigma_e > 0:
            counts = counts + sigma_e * torch.randn(
                counts.shape, generator=gen, device=p.device, dtype=counts.dtype
            )
        counts = counts.clamp(min=params.count_floor)
        out[b] = torch.log(i0 / counts)
    return out


def simulate_batch(
    hu: torch.Tensor,
    pixel_mm: float,
    params: PhysicsParams,
    *,
    seeds: Sequence[int],
    projector: Projector,
    want_noise: bool = False,
    i0_factors: Sequence[float] | None = None,
) -> BatchResult:
    """Simulate a padding-free batch already on the projector's device.

    ``i0_factors`` scale each slice's photons per ray (default 1: constant current).
    """
    scale = params.mu_water * pixel_mm  # attenuation per pixel of water
    mu = (scale * (1.0 + hu / 1000.0)).clamp(min=0.0)
    clean = projector.project(mu)
    factors = [1.0] * len(seeds) if i0_factors is None else list(i0_factors)
    noisy = _noisy_line_integrals(clean, params, seeds, factors)
    to_hu = 1000.0 / scale
    if params.keep_resolution:
        noise = projector.fbp(noisy - clean, params.filter) * to_hu
        return BatchResult(simulated=hu + noise, noise=noise)
    simulated = projector.fbp(noisy, params.filter) * to_hu - 1000.0
    only_noise = projector.fbp(noisy - clean, params.filter) * to_hu if want_noise else None
    return BatchResult(simulated=simulated, noise=only_noise)


def check_slices(hu: np.ndarray, pixel_mm: float, padding: np.ndarray | None) -> FloatArray:
    """Validate inputs of :func:`simulate_slices`; returns float32 (B, H, W)."""
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or 0 in arr.shape:
        raise InputError(f"simulation needs slices shaped (B, H, W), got {np.shape(hu)}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"the input has {bad} NaN or infinite voxels; CT in HU must be finite")
    if not (np.isfinite(pixel_mm) and pixel_mm > 0):
        raise InputError(f"pixel size must be a positive number of mm, got {pixel_mm}")
    if padding is not None and np.shape(padding) != arr.shape:
        raise InputError(
            f"padding mask shape {np.shape(padding)} does not match the slices {arr.shape}"
        )
    return arr


class SliceOptions(TypedDict, total=False):
    """Options of :func:`simulate_slices` (defaults in :func:`_simulate`).

    ``seed``: noise seed of the run. ``padding``: scanner padding, returned unchanged.
    ``device``, ``batch_size``: where and how many slices at once. ``first_index``: index of
    the first slice within its volume (it selects the per-slice noise seeds, so a volume
    simulated in pieces equals one simulated at once); ``indices``: each slice's volume
    index explicitly, for non-contiguous picks. ``progress``: called with (done, total).
    ``i0_factors``: one factor per given slice on the photons per ray (tube-current
    modulation); None images every slice with ``params.incident_photons``.
    """

    seed: int
    padding: np.ndarray | None
    device: str
    batch_size: int
    first_index: int
    progress: ProgressFn | None
    indices: Sequence[int] | None
    i0_factors: Sequence[float] | None


def simulate_slices(
    hu: np.ndarray, pixel_mm: float, params: PhysicsParams, **options: Unpack[SliceOptions]
) -> FloatArray:
    """Low-dose versions (float32 HU, (B, H, W)) of HU slices (B, H, W)."""
    return _simulate(hu, pixel_mm, params, want_noise=False, **options)[0]


def simulate_slices_with_noise(
    hu: np.ndarray, pixel_mm: float, params: PhysicsParams, **options: Unpack[SliceOptions]
) -> tuple[FloatArray, FloatArray]:
    """As :func:`simulate_slices`, also returning the simulated noise image (sim - clean)."""
    sim, noise = _simulate(hu, pixel_mm, params, want_noise=True, **options)
    assert noise is not None
    return sim, noise


def _simulate(
    hu: np.ndarray,
    pixel_mm: float,
    params: PhysicsParams,
    *,
    want_noise: bool,
    seed: int = 0,
    padding: np.ndarray | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    first_index: int = 0,
    progress: ProgressFn | None = None,
    indices: Sequence[int] | None = None,
    i0_factors: Sequence[float] | None = None,
) -> tuple[FloatArray, FloatArray | None]:
    arr = check_slices(hu, pixel_mm, padding)
    factors = _check_factors(i0_factors, arr.shape[0])
    if indices is None:
        indices = range(first_index, first_index + arr.shape[0])
    elif len(indices) != arr.shape[0]:
        raise InputError(f"{len(indices)} slice indices given for {arr.shape[0]} slices")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device, allow_mps=False)
    b_total, height, width = arr.shape
    geometry = ParallelGeometry.for_image(height, width, params.n_views, n_det=params.n_det)
    projector = get_projector(geometry, dev)
    pad = None if padding is None else np.asarray(padding, dtype=bool)
    out = np.empty_like(arr)
    noise_out = np.zeros_like(arr) if want_noise else None
    for start in range(0, b_total, batch_size):
        stop = min(start + batch_size, b_total)
        chunk = arr[start:stop].copy()
        if pad is not None:
            chunk[pad[start:stop]] = AIR_HU
        seeds = [slice_seed(seed, indices[k]) for k in range(start, stop)]
        with torch.no_grad():
            result = simulate_batch(
                torch.from_numpy(chunk).to(dev),
                pixel_mm,
                params,
                seeds=seeds,
                projector=projector,
                want_noise=want_noise,
                i0_factors=factors[start:stop],
            )
        sim = result.simulated.cpu().numpy().astype(np.float32)
        if pad is not None:
            sim[pad[start:stop]] = arr[start:stop][pad[start:stop]]
        out[start:stop] = sim
        if noise_out is not None and result.noise is not None:
            noise = result.noise.cpu().numpy().astype(np.float32)
            if pad is not None:
                noise[pad[start:stop]] = 0.0
            noise_out[start:stop] = noise
        if progress is not None:
            progress(stop, b_total)
    return out, noise_out


def _check_factors(i0_factors: Sequence[float] | None, count: int) -> list[float]:
    """Per-slice I0 factors as a list (all 1 when not given); refuses bad ones."""
    if i0_factors is None:
        return [1.0] * count
    factors = [float(f) for f in i0_factors]
    if len(factors) != count:
        raise InputError(f"{len(factors)} dose factors given for {count} slices")
    if not all(np.isfinite(f) and f > 0 for f in factors):
        raise InputError("per-slice dose factors must be positive numbers")
    return factors
