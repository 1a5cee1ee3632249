"""Module 3 (method.md section 5): the weak denoiser and its use for IPv2 labels.

Training is ``ipv2 train --scheme regression --weak``: pairs ``(sim(N), N)`` come from the
dataset's ``sim`` kind, or are simulated on the fly from ``ndct`` by :mod:`ipv2.lowdose`
with a seed that is a pure function of (seed, epoch, slice), so runs stay reproducible.
:func:`weak_denoise` applies a trained checkpoint to real low-dose slices; the dataset
builder combines it as ``IPv2(N) = L * W(U) + (1 - L) * N``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ipv2.checkpoint import Loaded, load_checkpoint
from ipv2.errors import CancelledError, InputError
from ipv2.train.data import DatasetInfo, FloatArray, LowTransform
from ipv2.train.dist import resolve_device
from ipv2.train.validate import pad_to_stride
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
    """``sim(N)`` per slice through :func:`ipv2.lowdose.simulate_slices` (issue #4)."""
    try:
        lowdose = importlib.import_module("ipv2.lowdose")
        simulate_slices = lowdose.simulate_slices
        physics = lowdose.PhysicsParams
    except (ImportError, AttributeError):
        raise InputError(
            "on-the-fly sim(N) for --weak needs ipv2.lowdose.simulate_slices, which this "
            "installation lacks; build the dataset with Module 2 so it has the 'sim' kind"
        ) from None
    params = physics(dose_fraction=dose_fraction)

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
    of the same shape. The checkpoint's HU window maps HU to the network range, so output
    values are clipped to that window (lungs lie well inside the default window).
    """
    arr = (
        volume_or_array.array
        if isinstance(volume_or_array, Volume)
        else np.asarray(volume_or_array)
    )
    squeeze = arr.ndim == 2
    vol = np.asarray(arr[None] if squeeze else arr, dtype=np.float32)
    if vol.ndim != 3 or 0 in vol.shape:
        raise InputError(
            f"weak_denoise needs a 2D slice or a 3D (z, y, x) volume, got shape {arr.shape}"
        )
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    loaded = (
        checkpoint if isinstance(checkpoint, Loaded) else load_checkpoint(checkpoint, device=dev)
    )
    model = loaded.model.to(dev).eval()
    if model.cond_channels:
        raise InputError(
            f"{loaded.path} holds a conditioned {model.arch!r} network; a weak denoiser is a plain regressor"
        )
    out = np.empty_like(vol)
    for start in range(0, vol.shape[0], batch_size):
        if cancel is not None and cancel():
            raise CancelledError(f"weak denoising cancelled at slice {start} of {vol.shape[0]}")
        chunk = torch.from_numpy(loaded.window.to_unit(vol[start : start + batch_size, None])).to(
            dev
        )
        x, h, w = pad_to_stride(chunk, model.stride)
        y = loaded.scheme.sample(model, x)
        out[start : start + batch_size] = loaded.window.from_unit(
            y[:, 0, :h, :w].float().cpu().numpy()
        )
        if progress is not None:
            progress(min(start + batch_size, vol.shape[0]), vol.shape[0])
    return out[0] if squeeze else out


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
