"""``ipv2 bench denoise``: one whole series through the real denoising engine, timed.

``ipv2 bench model`` times single forwards; what a user waits for is a series: every
slice through the sampler's K network calls, batching, the HU window, scanner padding,
and on a GPU the batch sizing from free memory and the halving on out-of-memory. So this
benchmark runs :func:`ipv2.inference.denoise.denoise_volume` exactly as ``ipv2 denoise``
does, with the same :class:`~ipv2.inference.denoise.DenoiseOptions`, on a synthetic
CT-like series in HU, and reports the series time, the time per slice, the peak memory
and the choices the engine made (batch, steps, precision, OOM retries).

The network is a real model folder (``--model``) or, without one, a randomly initialised
``--arch`` network (default FFM at base 64, the paper's) with its own scheme at its
defaults (flow, 10 Euler steps), so the timing is the real sampler's whatever the
weights. The input is built and one slice is denoised (warm-up: kernels, caches,
allocator) before the clock starts; nothing here is asserted, only printed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ipv2.core.devices import add_device_option, add_threads_option, apply_threads, parse_batch
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter

if TYPE_CHECKING:
    import torch

    from ipv2.core.volume import Volume
    from ipv2.inference.denoise import DenoiseInfo, DenoiseOptions
    from ipv2.io.checkpoints import Loaded

# Copies of the series a run holds at once (input, network range, output, the restored
# output volume, temporaries): refused up front when they cannot fit, not mid-run.
_SERIES_COPIES = 5
_PADDING_HU = -3024.0  # outside the reconstruction circle, as many scanners store it
_NOISE_SD_HU = 60.0  # white noise of an ultra-low-dose scan's order; timing ignores it
_NOISE_FIELDS = 8  # noise slices drawn; the others reuse them, shifted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder or installed model name (default: a random --arch network)",
    )
    parser.add_argument(
        "--arch", default=None, help="network for random weights (default ffm; not with --model)"
    )
    parser.add_argument(
        "--base",
        type=int,
        default=None,
        help="UNet base width for random weights (default 64, the paper's; not with --model)",
    )
    parser.add_argument("--slices", type=int, default=300, help="slices in the series (300)")
    parser.add_argument("--size", type=int, default=512, help="pixels across a slice (512)")
    parser.add_argument(
        "--steps",
        default="auto",
        metavar="auto|K",
        help="sampler steps, as ipv2 denoise takes them (auto: the model's measured choice, "
        "else its configured steps)",
    )
    parser.add_argument("--batch-size", default="auto", help="slices per batch, or auto (default)")
    parser.add_argument("--half", action="store_true", help="bf16/fp16 autocast on CUDA")
    add_device_option(parser)
    add_threads_option(parser)


@dataclass(frozen=True)
class Timed:
    """The timed series: what the engine reports, the wall time and the peak memory."""

    info: DenoiseInfo
    seconds: float
    peak_bytes: int | None
    peak_source: str


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Check, build the input, warm up, time one series, print and report the figures.

    Every refusal (arguments, stride, memory, the engine's own checks) comes before the
    input is built or a slice is denoised, so a mistake costs a second, not a run.
    """
    from ipv2.core.devices import resolve_device
    from ipv2.inference.denoise import check_denoise

    threads = apply_threads(args.threads)
    options = _options(args)
    _check_request(args)
    device = resolve_device(args.device)
    loaded, source = _network(args, device)
    _check_size(loaded, args.size)
    _check_memory(args.slices, args.size)
    t0 = time.perf_counter()
    volume = synthetic_series(args.slices, args.size)
    input_seconds = time.perf_counter() - t0
    check_denoise(volume.array, loaded, options)  # the engine's own refusals, before any work
    reporter.log(
        f"denoising {args.slices} synthetic slices of {args.size}x{args.size} with "
        f"{loaded.meta.get('arch')} ({loaded.scheme.name}, {source}) on {device}"
    )
    _warm_up(volume, loaded, options)
    timed = _timed_series(volume, loaded, options, device=device, reporter=reporter)
    figures = _figures(args, loaded, source, timed, device=device, threads=threads)
    figures["input_seconds"] = round(input_seconds, 3)
    human = getattr(args, "events", "human") == "human"
    print_table(figures, sys.stdout if human else sys.stderr)  # jsonl: stdout is events only
    reporter.done(status="ok", **figures)
    return 0


# ---------------------------------------------------------------------------- request


def _options(args: argparse.Namespace) -> DenoiseOptions:
    """``--steps``, ``--batch-size``, ``--half`` and ``--device`` as ``ipv2 denoise`` reads them."""
    from ipv2.inference.denoise import DenoiseOptions
    from ipv2.inference.steps_auto import parse_steps

    return DenoiseOptions(
        steps=parse_steps(args.steps),
        device=args.device,
        batch_size=parse_batch(args.batch_size),
        half=args.half,
    )


def _check_request(args: argparse.Namespace) -> None:
    """Refuse impossible series and mixed network choices before anything is built."""
    if args.slices < 1:
        raise InputError(f"--slices must be at least 1, got {args.slices}")
    if args.size < 1:
        raise InputError(f"--size must be at least 1 pixel, got {args.size}")
    if args.model is not None and (args.arch is not None or args.base is not None):
        raise InputError(
            "--model times that model as it was trained; --arch and --base choose a random "
            "network instead: give one or the other"
        )


def _check_size(loaded: Loaded, size: int) -> None:
    """The slice must fit the network's stride, so the time is that of the size asked for.

    ``ipv2 denoise`` pads other sizes up to the stride; a benchmark doing so would time a
    larger slice than it reports.
    """
    stride = int(getattr(loaded.model, "stride", 1))
    if size % stride or size < stride:
        fits = max(stride, size - size % stride)
        raise InputError(
            f"--size {size} is not a multiple of {stride}, the stride of this "
            f"{loaded.meta.get('arch')} network; use e.g. --size {fits} (ipv2 denoise pads "
            "other sizes, which would time a larger slice than asked for)"
        )


def _check_memory(slices: int, size: int) -> None:
    """Refuse a series whose copies cannot fit in memory, instead of failing mid-run."""
    from ipv2.core.memory import available_memory_bytes, format_bytes

    need = _SERIES_COPIES * 4 * slices * size * size
    room = available_memory_bytes()
    if room is not None and need > room:
        raise InputError(
            f"a {slices} x {size} x {size} series needs about {format_bytes(need)} of memory "
            f"(input, network range and output copies), more than the {format_bytes(room)} "
            "available; use fewer --slices or a smaller --size"
        )


# ---------------------------------------------------------------------------- network


def _network(args: argparse.Namespace, device: torch.device) -> tuple[Loaded, str]:
    """The model to time and where it came from (its folder, or ``random weights``)."""
    if args.model is not None:
        from ipv2.io.checkpoints import load_checkpoint
        from ipv2.io.model_store import find_model

        loaded = load_checkpoint(find_model(args.model), device=device)
        return loaded, str(loaded.path)
    return random_network(args.arch or "ffm", args.base, device), "random weights"


def random_network(arch: str, base: int | None, device: torch.device) -> Loaded:
    """A freshly initialised ``arch`` wrapped as a loaded model is, with its own scheme.

    Built by the registry (the bounds every checkpoint passes) and described by the
    engine's own :func:`~ipv2.io.checkpoints.model_metadata`, so the sampler, the HU
    window and the steps choice are what a trained model of this shape gets.
    """
    import torch

    from ipv2.core.hu_window import DEFAULT_PNG_WINDOW
    from ipv2.io.checkpoints import Loaded, model_metadata
    from ipv2.models.registry import build, get_spec
    from ipv2.schemes.registry import make_scheme

    spec = get_spec(arch)
    if base is not None and "base" not in spec.defaults:
        raise InputError(
            f"network {spec.name!r} has no base width (it takes {', '.join(spec.defaults)}); "
            "drop --base"
        )
    torch.manual_seed(0)
    model = build(spec.name, **({"base": base} if base is not None else {}))
    model = model.to(device).eval()
    scheme = make_scheme(spec.scheme)
    meta = model_metadata(model, scheme, DEFAULT_PNG_WINDOW, strategy=None, modules=[])
    return Loaded(model, scheme, DEFAULT_PNG_WINDOW, meta=meta, path=Path(f"random-{spec.name}"))


# ---------------------------------------------------------------------------- input


def synthetic_series(slices: int, size: int, seed: int = 0) -> Volume:
    """A chest-like series in HU: body, two lungs that grow and shrink along z, a spine,
    white noise, and scanner padding outside the reconstruction circle.

    Built slice by slice in float32 (no whole-series temporaries), the noise drawn for a
    few slices and reused shifted, so 300 x 512 x 512 takes well under a second: the
    network's time does not depend on the anatomy or the noise, only a realistic HU
    range and the padding matter for the engine's path.
    """
    from ipv2.core.volume import Volume

    rng = np.random.default_rng(seed)
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    y, x = c[:, None], c[None, :]
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0
    spine = (x / 0.09) ** 2 + ((y - 0.42) / 0.09) ** 2 <= 1.0
    chest = body & ~spine  # where lung may be
    outside = x**2 + y**2 > 1.0
    anatomy = np.where(body, np.float32(40.0), np.float32(-1000.0)).astype(np.float32)
    anatomy[spine] = 700.0
    bank = rng.standard_normal((min(slices, _NOISE_FIELDS), size, size), dtype=np.float32)
    bank *= np.float32(_NOISE_SD_HU)
    shifts = rng.integers(0, size, slices)
    out = np.empty((slices, size, size), np.float32)
    for k in range(slices):
        scale = np.float32(0.5 + 0.5 * np.sin(np.pi * (k + 0.5) / slices))
        lungs = ((np.abs(x) - 0.4) / (0.27 * scale)) ** 2 + (y / (0.45 * scale)) ** 2 <= 1.0
        sl = out[k]
        np.copyto(sl, anatomy)
        np.copyto(sl, np.float32(-850.0), where=lungs & chest)
        sl += np.roll(bank[k % len(bank)], int(shifts[k]), axis=1)
        np.copyto(sl, np.float32(_PADDING_HU), where=outside)
    pixel_mm = 350.0 / size
    return Volume(out, spacing=(pixel_mm, pixel_mm, 1.25))


# ---------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock reads finished work, not launched work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _warm_up(volume: Volume, loaded: Loaded, options: DenoiseOptions) -> None:
    """One slice through the same path, untimed: kernel selection, caches, the allocator."""
    from ipv2.inference.denoise import denoise_array

    denoise_array(volume.array[:1], loaded, options)


def _timed_series(
    volume: Volume,
    loaded: Loaded,
    options: DenoiseOptions,
    *,
    device: torch.device,
    reporter: Reporter,
) -> Timed:
    """The series as ``ipv2 denoise`` runs it, between two device synchronisations."""
    import torch

    from ipv2.inference.denoise import denoise_volume

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    _, info = denoise_volume(
        volume,
        loaded,
        options,
        progress=lambda done, total: reporter.progress("denoise", done, total),
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    peak, source = peak_memory(device)
    return Timed(info=info, seconds=seconds, peak_bytes=peak, peak_source=source)


def peak_memory(device: torch.device) -> tuple[int | None, str]:
    """Peak bytes and what they count: the run's tensors on CUDA, the process on the CPU."""
    import torch

    if device.type == "cuda":
        return (
            int(torch.cuda.max_memory_allocated(device)),
            "torch.cuda.max_memory_allocated over the timed series",
        )
    if device.type != "cpu":
        return None, f"not measured on {device.type}"
    try:
        import resource
    except ImportError:  # Windows
        return None, "not measured (no resource module on this platform)"
    rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    scale = 1 if sys.platform == "darwin" else 1024  # macOS counts bytes, Linux KiB
    return rss * scale, "peak RSS of the whole process (getrusage), input and warm-up included"


# ---------------------------------------------------------------------------- report


def device_name(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's name, or the CPU's model."""
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple GPU (MPS)"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _figures(
    args: argparse.Namespace,
    loaded: Loaded,
    source: str,
    timed: Timed,
    *,
    device: torch.device,
    threads: int,
) -> dict[str, Any]:
    """Everything the run measured and chose, as the ``done`` event carries it."""
    import torch

    info = timed.info
    hparams = loaded.meta.get("hparams", {})
    params = sum(p.numel() for p in loaded.model.parameters())
    return {
        "slices": info.slices,
        "size": args.size,
        "series_seconds": round(timed.seconds, 3),
        "seconds_per_slice": round(timed.seconds / max(info.slices, 1), 4),
        "engine_seconds": round(info.seconds, 3),
        "peak_memory_bytes": timed.peak_bytes,
        "peak_memory_source": timed.peak_source,
        "device": info.device,
        "device_name": device_name(device),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "batch_size": info.batch_size,
        "batch_how": "auto" if parse_batch(args.batch_size) is None else "given",
        "steps": info.steps,
        "steps_how": info.steps_how,
        "steps_note": info.steps_note,
        "precision": info.precision,
        "half_requested": bool(args.half),
        "oom_retries": info.oom_retries,
        "notes": list(info.notes),
        "model": source,
        "arch": loaded.meta.get("arch"),
        "base": hparams.get("base", hparams.get("width")),
        "params": params,
        "scheme": loaded.scheme.name,
    }


def print_table(figures: dict[str, Any], stream: IO[str]) -> None:
    """The figures for people, one per line."""
    from ipv2.core.memory import format_bytes

    peak = figures["peak_memory_bytes"]
    rows = [
        ("series", f"{figures['slices']} x {figures['size']} x {figures['size']} (synthetic HU)"),
        (
            "model",
            f"{figures['arch']} base {figures['base']}, {figures['params'] / 1e6:.3f}M params, "
            f"{figures['scheme']} ({figures['model']})",
        ),
        ("device", f"{figures['device']} ({figures['device_name']})"),
        ("threads", f"{figures['threads']} (torch {figures['torch_threads']})"),
        ("precision", str(figures["precision"])),
        ("steps", f"{figures['steps']} ({figures['steps_how']}: {figures['steps_note']})"),
        ("batch size", f"{figures['batch_size']} ({figures['batch_how']})"),
        ("OOM retries", str(figures["oom_retries"])),
        ("series time", f"{figures['series_seconds']:.3f} s"),
        ("per slice", f"{figures['seconds_per_slice']:.4f} s"),
        (
            "peak memory",
            ("n/a" if peak is None else format_bytes(peak)) + f" ({figures['peak_memory_source']})",
        ),
        ("input built in", f"{figures['input_seconds']:.3f} s (untimed)"),
    ]
    rows += [("note", note) for note in figures["notes"]]
    for name, value in rows:
        print(f"{name:<15} {value}", file=stream)
