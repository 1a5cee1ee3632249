"""The weak denoiser (Module 3, method.md section 5) applied to real low-dose slices.

A weak denoiser is a one-pass network (RED-CNN, scheme ``regression``) trained with
``ipv2 train --weak-denoiser`` on ``(sim(N), N)`` pairs (:mod:`ipv2.training.simulated_pairs`).
Applied to the real uLDCT it gives ``W = weak(U)``, which the purification pipeline pastes
into the lungs of the evaluation label: ``IPv2(N) = L * W + (1 - L) * N``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.io.checkpoints import Loaded, load_checkpoint

FloatArray = npt.NDArray[np.float32]


def weak_denoise(
    volume_or_array: Volume | npt.ArrayLike,
    checkpoint: str | os.PathLike[str] | Loaded,
    device: str = "auto",
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FloatArray:
    """Denoise every axial slice with a weak-denoiser checkpoint; HU in, HU out.

    Accepts a :class:`Volume` or a 2D/3D array (z, y, x) in HU and returns a float32 array
    of the same shape, through the engine's one inference path (:mod:`ipv2.inference.denoise`).
    """
    from ipv2.core.devices import resolve_device
    from ipv2.inference.denoise import DenoiseOptions, denoise_array

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
            "is a plain one-pass network"
        )
    options = DenoiseOptions(device=device, batch_size=batch_size)
    out, _ = denoise_array(arr, loaded, options, progress=progress, cancel=cancel)
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


class WeakDenoiser:
    """A loaded weak denoiser as the purification pipeline calls it: ``U -> W``."""

    def __init__(self, loaded: Loaded) -> None:
        if loaded.model.cond_channels:
            raise InputError(
                f"{loaded.path} holds a conditioned {loaded.model.arch!r} network; a weak "
                "denoiser is a plain one-pass network (train one with ipv2 train --weak-denoiser)"
            )
        self.loaded = loaded

    def __call__(self, u: Volume, progress: Callable[[int, int], None] | None = None) -> Volume:
        return u.with_array(weak_denoise(u, self.loaded, progress=progress))

    @property
    def description(self) -> str:
        meta = self.loaded.meta
        return f"weak denoiser {self.loaded.path} ({meta.get('arch')}, {self.loaded.scheme.name})"


def load_weak_denoiser(checkpoint: str | os.PathLike[str], device: str = "auto") -> WeakDenoiser:
    """Load a weak denoiser checkpoint folder (model.safetensors + model.json)."""
    from ipv2.core.devices import resolve_device

    return WeakDenoiser(load_checkpoint(checkpoint, device=resolve_device(device)))
