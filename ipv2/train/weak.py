"""Module 3 (method.md section 5): the weak denoiser and its use for IPv2 labels.

Training is ``ipv2 train --scheme regression --weak``: pairs ``(sim(N), N)`` come from the
dataset's ``sim`` kind, or are simulated on the fly from ``ndct`` by :mod:`ipv2.lowdose`
with a seed that is a pure function of (seed, epoch, slice), so runs stay reproducible.
:func:`weak_denoise` applies a trained checkpoint to real low-dose slices; the dataset
builder combines it as ``IPv2(N) = L * W(U) + (1 - L) * N``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.checkpoint import Loaded, load_checkpoint
from ipv2.errors import InputError
from ipv2.train.data import DatasetInfo, FloatArray, LowTransform
from ipv2.volume import Volume

DEFAULT_PIXEL_MM = 0.7


def dataset_pixel_mm(info: DatasetInfo) -> float:
    """In-plane pixel size from the manifest's case geometry (the simulation needs mm)."""
    for case in info.manifest.get("cases", []):
        geometry = case.get("geometry", case) if isinstance(case, dict) else {}
        spacing = geometry.get("spacing") if isinstance(geometry, dict) else None
        if isinstance(spacing, (list, tuple)) and len(spacing) >= 2:
            return float(np.sqrt(float(spacing[0]) * float(spacing[1])))
    return DEFAULT_PIXEL_MM


def make_simulator(dose_fraction: float, pixel_mm: float) -> LowTransform:
    """``sim(N)`` per slice through :func:`ipv2.lowdose.simulate_slices`."""
    from ipv2.lowdose import PhysicsParams, simulate_slices

    params = PhysicsParams(dose_fraction=dose_fraction)

    def simulate(hu: FloatArray, seed: list[int]) -> FloatArray:
        s = int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])
        out = np.asarray(simulate_slices(hu, pixel_mm, params, s), dtype=np.float32)
        return out.reshape(hu.shape)

    return simulate


def weak_denoise(
    volume_or_array: Volume | npt.ArrayLike,
    checkpoint: str | os.PathLike[str] | Loaded,
    device: str = "auto",
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FloatArray:
    """Denoise every axial slice with a weak-denoiser checkpoint; HU in, HU out.

    Accepts a :class:`Volume` or a 2D/3D array (z, y, x) in HU and returns a float32 array
    of the same shape, through the engine's one inference path (:mod:`ipv2.infer`).
    """
    from ipv2.devices import resolve_device
    from ipv2.infer import DenoiseOptions, denoise_array

    arr = (
        volume_or_array.array
        if isinstance(volume_or_array, Volume)
        else np.asarray(volume_or_array)
    )
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise InputError(
            f"weak_denoise needs a 2D slice or a 3D (z, y, x) volume, got shape {arr.shape}"
        )
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    loaded = (
        checkpoint
        if isinstance(checkpoint, Loaded)
        else load_checkpoint(checkpoint, device=resolve_device(device))
    )
    if loaded.model.cond_channels:
        raise InputError(
            f"{loaded.path} holds a conditioned {loaded.model.arch!r} network; a weak denoiser "
            "is a plain regressor"
        )
    options = DenoiseOptions(device=device, batch_size=batch_size)
    out, _ = denoise_array(arr, loaded, options, progress, cancel)
    return out.reshape(arr.shape)


def describe(loaded: Loaded) -> dict[str, Any]:
    """Short provenance of a weak denoiser, for the dataset manifest."""
    meta = loaded.meta
    return {
        "path": str(loaded.path),
        "arch": meta.get("arch"),
        "sha256": (meta.get("weights") or {}).get("sha256"),
        "window": meta.get("window"),
        "step": meta.get("step"),
    }
