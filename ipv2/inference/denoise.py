"""Denoising whole series with a trained model: batching, devices, memory, cancel.

One engine for every caller (``ipv2 denoise``, the Slicer panel's job, the weak denoiser
that builds IPv2 labels, the demo): slices go through the model's scheme in batches, in
the HU window stored with the model, with progress reported per sampler step and a cancel
honoured between steps. On CUDA it runs under ``inference_mode`` with autocast (bf16
where supported) when half precision is asked for, picks the batch size from free GPU
memory, and halves the batch and carries on when memory runs out.

The network sees the input clipped to its window. Bone and metal brighter than the
window keep their excess over the window's top in the output instead of being flattened;
below the window there is only air and its noise, so the network's output stands there.
Scanner padding is restored exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from ipv2.core.devices import resolve_device
from ipv2.core.errors import CancelledError, InputError, IPv2Error
from ipv2.core.padding import detect_padding
from ipv2.core.volume import Volume
from ipv2.io.checkpoints import Loaded
from ipv2.models.common import pad_to_stride

FloatArray = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

_CPU_BATCH = 4
_MAX_AUTO_BATCH = 64


@dataclass(frozen=True)
class DenoiseOptions:
    """How to run a model; ``None`` means the model's or the machine's default."""

    steps: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    half: bool = False


@dataclass
class DenoiseInfo:
    """What actually happened, for the JSON sidecar and the event stream."""

    device: str
    steps: int
    batch_size: int
    precision: str
    seconds: float = 0.0
    slices: int = 0
    oom_retries: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        per_slice = self.seconds / self.slices if self.slices else 0.0
        return {
            "device": self.device,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "seconds": round(self.seconds, 3),
            "seconds_per_slice": round(per_slice, 4),
            "slices": self.slices,
            "oom_retries": self.oom_retries,
            "notes": self.notes,
        }


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (and MPS) out-of-memory errors, whatever torch version raised them."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def auto_batch_size(
    model: nn.Module, shape: tuple[int, int], device: torch.device, *, half: bool
) -> int:
    """A batch that fits: from free GPU memory on CUDA, a small fixed size elsewhere.

    The estimate (activations of a UNet of this width at this image size, with headroom)
    is deliberately rough: the out-of-memory fallback corrects an optimistic guess.
    """
    if device.type != "cuda":
        return _CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    width = int(
        getattr(model, "hparams", {}).get("base", getattr(model, "hparams", {}).get("width", 64))
    )
    bytes_per_value = 2 if half else 4
    per_slice = shape[0] * shape[1] * width * bytes_per_value * 48
    return int(max(1, min(_MAX_AUTO_BATCH, (free * 0.6) // max(per_slice, 1))))


def _precision(device: torch.device, half: bool) -> torch.dtype | None:
    if not half or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class SliceRunner:
    """Runs the model's sampler on batches of slices in the network range [-1, 1]."""

    def __init__(self, loaded: Loaded, device: torch.device, steps: int, half: bool) -> None:
        self.loaded = loaded
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.steps = steps
        self.dtype = _precision(device, half)
        channels = int(getattr(self.model, "in_channels", 1))
        cond = int(getattr(self.model, "cond_channels", 0))
        self.channels = channels
        self.context = max(0, (cond // channels - 1) // 2) if cond else 0
        self.conditioned = cond > 0

    def _channels(self, x: Tensor) -> Tensor:
        return x.repeat(1, self.channels, 1, 1) if self.channels > 1 else x

    def run(
        self,
        unit: FloatArray,
        start: int,
        stop: int,
        *,
        on_step: Callable[[int, int], None] | None,
        cancel: Cancel | None,
    ) -> FloatArray:
        """Denoise slices ``start:stop`` of the (z, y, x) stack ``unit``."""
        h, w = unit.shape[1:]
        x = torch.from_numpy(np.ascontiguousarray(unit[start:stop, None])).to(self.device)
        x, _, _ = pad_to_stride(self._channels(x), int(getattr(self.model, "stride", 1)))
        cond = None
        if self.conditioned:
            z = unit.shape[0]
            rows = [
                np.clip(np.arange(k - self.context, k + self.context + 1), 0, z - 1)
                for k in range(start, stop)
            ]
            neighbours = torch.from_numpy(np.ascontiguousarray(unit[np.stack(rows)])).to(
                self.device
            )
            if self.channels > 1:
                neighbours = neighbours.repeat_interleave(self.channels, dim=1)
            cond, _, _ = pad_to_stride(neighbours, int(getattr(self.model, "stride", 1)))
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None,
            ),
        ):
            y = self.loaded.scheme.sample(
                self.model, x, steps=self.steps, callback=on_step, cancel=cancel, cond=cond
            )
        y = y[:, :, :h, :w].float().mean(dim=1)
        return np.asarray(y.cpu().numpy(), dtype=np.float32)


def denoise_array(
    hu: npt.ArrayLike,
    loaded: Loaded,
    options: DenoiseOptions | None = None,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    runner: SliceRunner | None = None,
) -> tuple[FloatArray, DenoiseInfo]:
    """Denoise a (z, y, x) HU stack; returns HU and what was done.

    ``progress(done, total)`` counts sampler steps over all slices. ``cancel()`` is polled
    between steps; a cancel raises :class:`CancelledError` and returns nothing partial.
    """
    opts = options or DenoiseOptions()
    vol = np.asarray(hu, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3 or 0 in vol.shape:
        raise InputError(f"denoising needs a 2D slice or a 3D (z, y, x) stack, got {vol.shape}")
    if not np.isfinite(vol).all():
        raise InputError("the input contains NaN or infinite voxels; CT in HU must be finite")
    device = resolve_device(opts.device)
    steps = loaded.scheme.resolve_steps(opts.steps)
    if runner is None:
        runner = SliceRunner(loaded, device, steps, opts.half)
    batch = opts.batch_size or auto_batch_size(runner.model, vol.shape[1:], device, half=opts.half)
    if batch < 1:
        raise InputError(f"batch size must be at least 1, got {batch}")
    info = DenoiseInfo(
        device=str(device),
        steps=steps,
        batch_size=batch,
        precision=str(runner.dtype).replace("torch.", "") if runner.dtype else "float32",
    )
    window = loaded.window
    unit = window.to_unit(vol)
    out = np.empty_like(vol)
    total = vol.shape[0] * steps
    t0 = time.perf_counter()
    start = 0
    while start < vol.shape[0]:
        if cancel is not None and cancel():
            raise CancelledError(f"denoising cancelled after {start} of {vol.shape[0]} slices")
        stop = min(start + batch, vol.shape[0])
        done_before = start * steps
        width = stop - start

        def on_step(i: int, n: int, _base: int = done_before, _w: int = width) -> None:
            if progress is not None:
                progress(_base + i * _w, total)

        try:
            pred = runner.run(unit, start, stop, on_step=on_step, cancel=cancel)
        except CancelledError:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc) or batch == 1:
                if is_out_of_memory(exc):
                    raise IPv2Error(
                        "out of GPU memory even with one slice per batch; use --device cpu, "
                        "--half, or a smaller model"
                    ) from exc
                raise
            batch = max(1, batch // 2)
            info.oom_retries += 1
            info.batch_size = batch
            info.notes.append(f"out of memory at slice {start}: batch size halved to {batch}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        # Above the window (bone, metal) the network saw a flattened value: keep the
        # input's excess. Below it lies only air and its noise, which is what denoising
        # removes, so the network's output stands there.
        above = np.maximum(vol[start:stop] - np.float32(window.high), 0.0)
        out[start:stop] = window.from_unit(pred) + above
        start = stop
        if progress is not None:
            progress(start * steps, total)
    info.seconds = time.perf_counter() - t0
    info.slices = int(vol.shape[0])
    return out, info


def denoise_volume(
    volume: Volume,
    loaded: Loaded,
    options: DenoiseOptions | None = None,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    runner: SliceRunner | None = None,
) -> tuple[Volume, DenoiseInfo]:
    """:func:`denoise_array` on a volume; geometry and scanner padding are kept."""
    padding = detect_padding(volume.array)
    out, info = denoise_array(
        volume.array, loaded, options, progress=progress, cancel=cancel, runner=runner
    )
    if padding.found:
        out[padding.mask] = volume.array[padding.mask]
        info.notes.append(
            f"scanner padding kept as it was ({padding.summary()['padding_values_hu']})"
        )
    return volume.with_array(out), info
