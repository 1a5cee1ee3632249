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

The sampler's steps are a count, ``"auto"`` (the fewest steps the model's measured steps
curve says are as good as the most, :mod:`ipv2.inference.steps_auto`; the command
line's default) or ``None`` (the model's configured steps); :func:`sampler_steps` says
which and why, and :class:`DenoiseInfo` carries that line.

Runs far beyond any useful length (more than ``long_runs.MAX_SAMPLER_STEPS`` sampler
steps, from ``--steps`` or from a model.json's scheme) are refused unless
``allow_long`` is set, with a duration estimated from one measured network pass; a slice
whose feature maps could not fit in the device's memory at all is refused before the
first allocation, and on the CPU the batch is sized to the memory available.
"""

from __future__ import annotations

import os
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
from ipv2.core.long_runs import MAX_SAMPLER_STEPS, sampler_steps_refusal
from ipv2.core.padding import detect_padding
from ipv2.core.volume import Volume
from ipv2.inference.steps_auto import StepsChoice, choose_for_model
from ipv2.io.checkpoints import Loaded
from ipv2.models.bounds import activation_bytes
from ipv2.models.common import pad_to_stride

FloatArray = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

_CPU_BATCH = 4
# On the CPU a batch pays only while its feature maps stay in cache: a base-16 FFM at
# batch 1, 2, 4 on two cores took 0.081, 0.069, 0.054 s per 128 px slice, but 0.21,
# 0.22, 0.24 s per 256 px slice and 1.07, 1.34, 2.22 s per 512 px slice. So the
# automatic CPU batch holds at most this many pixels (four 128 px slices, one 256 px).
_CPU_BATCH_PIXELS = 4 * 128 * 128
_MAX_AUTO_BATCH = 64


@dataclass(frozen=True)
class DenoiseOptions:
    """How to run a model; ``None`` means the model's or the machine's default.

    ``steps``: a count, ``"auto"`` (chosen from the model's steps curve), or ``None``
    (the model's configured steps).
    """

    steps: int | str | None = None
    device: str = "auto"
    batch_size: int | None = None
    half: bool = False
    allow_long: bool = False  # run more than MAX_SAMPLER_STEPS steps without refusing


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
    steps_how: str = "configured"  # "auto", "given" or "configured"
    steps_note: str = ""  # one line: the steps and why (see sampler_steps)

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
            "steps_how": self.steps_how,
            "steps_note": self.steps_note,
        }


def sampler_steps(loaded: Loaded, requested: int | str | None = "auto") -> StepsChoice:
    """The steps to sample ``loaded`` with for ``--steps`` ``requested``, and why.

    ``"auto"`` takes the fewest steps within the tolerance of the best on the model's
    steps curve; a model without one keeps its configured steps and the note says so.
    The choice carries the curve, for panels that show it and the time it predicts.
    """
    choice = choose_for_model(loaded.meta, requested, configured=int(loaded.scheme.default_steps))
    loaded.scheme.resolve_steps(choice.steps)  # the scheme's own refusals (below 1 step)
    return choice


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (and MPS) out-of-memory errors, whatever torch version raised them."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    # The CPU allocator says "DefaultCPUAllocator: can't allocate memory".
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def auto_batch_size(
    model: nn.Module, shape: tuple[int, int], device: torch.device, *, half: bool
) -> int:
    """A batch that fits: from free GPU memory on CUDA, a small fixed size elsewhere.

    The estimate (activations of a UNet of this width at this image size, with headroom)
    is deliberately rough: the out-of-memory fallback corrects an optimistic guess.
    """
    if device.type != "cuda":
        per_slice = slice_activation_bytes(model, shape, half=False)
        fits = int(_available_cpu_bytes() * 0.5) // max(per_slice, 1)
        cached = _CPU_BATCH_PIXELS // max(shape[0] * shape[1], 1)
        return int(max(1, min(_CPU_BATCH, fits, cached)))
    free, _ = torch.cuda.mem_get_info(device)
    width = int(
        getattr(model, "hparams", {}).get("base", getattr(model, "hparams", {}).get("width", 64))
    )
    bytes_per_value = 2 if half else 4
    per_slice = shape[0] * shape[1] * width * bytes_per_value * 48
    return int(max(1, min(_MAX_AUTO_BATCH, (free * 0.6) // max(per_slice, 1))))


def slice_activation_bytes(model: nn.Module, shape: tuple[int, int], *, half: bool) -> int:
    """Estimated feature-map bytes of one slice through ``model`` (padded to its stride)."""
    hparams = getattr(model, "hparams", None)
    if not isinstance(hparams, dict) or not ("mults" in hparams or "width" in hparams):
        return 0
    stride = int(getattr(model, "stride", 1))
    h, w = (-(-int(n) // stride) * stride for n in shape)
    return activation_bytes(hparams, height=h, width=w, bytes_per_value=2 if half else 4)


def _available_cpu_bytes() -> int:
    """Memory the process can still use (Linux's MemAvailable), else the physical total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _total_cpu_bytes()


def _total_cpu_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 62  # unknown: never refuse on this ground


def check_slice_fits(model: nn.Module, shape: tuple[int, int], device: torch.device) -> None:
    """Refuse slices whose feature maps alone exceed the device's whole memory.

    Twice the total, so an estimate on the high side never refuses a run that fits; a
    tighter squeeze is left to the batch sizing and the out-of-memory fallback.
    """
    need = slice_activation_bytes(model, shape, half=False)
    if device.type == "cuda":
        total = int(torch.cuda.get_device_properties(device).total_memory)
    elif device.type == "cpu":
        total = _total_cpu_bytes()
    else:
        return
    if need > 2 * total:
        raise InputError(
            f"one {shape[0]}x{shape[1]} slice through this network needs about "
            f"{need / 2**30:.3g} GiB of feature maps (estimated from its hyper-parameters), "
            f"more than twice the {total / 2**30:.3g} GiB of {device.type} memory; use a "
            "smaller model or crop the volume"
        )


def check_run_length(
    runner: SliceRunner, unit: FloatArray, *, steps: int, allow_long: bool
) -> None:
    """Refuse more than ``MAX_SAMPLER_STEPS`` steps unless allowed, with a measured estimate.

    One network pass on one slice is timed (twice, keeping the faster, so a first call's
    warm-up does not inflate it) and scaled by steps and slices: a slight overestimate on
    GPUs, where batching makes each slice cheaper.
    """
    if steps <= MAX_SAMPLER_STEPS or allow_long:
        return
    probe = SliceRunner(runner.loaded, runner.device, 1, runner.dtype is not None)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        probe.run(unit, 0, 1, on_step=None, cancel=None)
        times.append(time.perf_counter() - t0)
    per_pass = min(times)
    slices = int(unit.shape[0])
    h, w = unit.shape[1:]
    message = sampler_steps_refusal(
        steps,
        estimate_s=per_pass * steps * slices,
        basis=(
            f"measured: one network pass on one {h}x{w} slice took {per_pass:.3g} s on "
            f"{runner.device.type}, times {steps} steps and {slices} slice(s)"
        ),
        default_steps=int(runner.loaded.scheme.default_steps),
    )
    if message:
        raise InputError(message)


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


def _preflight(runner: SliceRunner, unit: FloatArray, *, steps: int, allow_long: bool) -> None:
    check_slice_fits(runner.model, unit.shape[1:], runner.device)
    check_run_length(runner, unit, steps=steps, allow_long=allow_long)


def check_denoise(hu: npt.ArrayLike, loaded: Loaded, options: DenoiseOptions) -> None:
    """The refusals :func:`denoise_array` makes before any work, for a caller that wants
    them before it announces the run (so a refusal is the only thing the user sees)."""
    vol = np.asarray(hu, dtype=np.float32)
    vol = vol[None] if vol.ndim == 2 else vol
    if vol.ndim != 3 or 0 in vol.shape:
        return  # denoise_array says what is wrong with the shape
    device = resolve_device(options.device)
    steps = sampler_steps(loaded, options.steps).steps
    runner = SliceRunner(loaded, device, steps, options.half)
    _preflight(runner, loaded.window.to_unit(vol), steps=steps, allow_long=options.allow_long)


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
    choice = sampler_steps(loaded, opts.steps)
    steps = choice.steps
    if runner is None:
        runner = SliceRunner(loaded, device, steps, opts.half)
    window = loaded.window
    unit = window.to_unit(vol)
    _preflight(runner, unit, steps=steps, allow_long=opts.allow_long)
    batch = opts.batch_size or auto_batch_size(runner.model, vol.shape[1:], device, half=opts.half)
    if batch < 1:
        raise InputError(f"batch size must be at least 1, got {batch}")
    info = DenoiseInfo(
        device=str(device),
        steps=steps,
        batch_size=batch,
        precision=str(runner.dtype).replace("torch.", "") if runner.dtype else "float32",
        steps_how=choice.how,
        steps_note=choice.note,
    )
    out = np.empty_like(vol)
    total = vol.shape[0] * steps
    reported = -1

    def report(done: int) -> None:
        # The sampler reports a batch's last step and the loop its end: say it once.
        nonlocal reported
        if progress is not None and done != reported:
            reported = done
            progress(done, total)

    t0 = time.perf_counter()
    start = 0
    while start < vol.shape[0]:
        if cancel is not None and cancel():
            raise CancelledError(f"denoising cancelled after {start} of {vol.shape[0]} slices")
        stop = min(start + batch, vol.shape[0])
        done_before = start * steps
        width = stop - start

        def on_step(i: int, n: int, _base: int = done_before, _w: int = width) -> None:
            report(_base + i * _w)

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
        report(start * steps)
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
