"""``ipv2 bench model``: parameters, GFLOP and ms per forward per network; FFM training speed.

Figures, never assertions: FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matmuls; FFTs are not counted), times are medians over repeats after
a warm-up, on the current device (``--device``), batch 1, no gradients.

FFM is measured twice on the CPU, side by side on the same weights and inputs: ``ffm``
(the network computed as method.md writes it, as the authors' code does) and
``ffm-fast`` (the form CPU inference runs, :mod:`ipv2.models.ffm_fast`), with the time
ratio and the largest output difference.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ipv2.core.devices import add_device_option, resolve_device
from ipv2.core.events import Reporter
from ipv2.models.ffm import FFM
from ipv2.models.registry import MODELS, build
from ipv2.schemes.registry import make_scheme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="slice sizes")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="networks to measure")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per size")
    parser.add_argument("--train-steps", type=int, default=5, help="timed FFM training steps")
    parser.add_argument("--base", type=int, help="override the UNet base width (quick runs)")
    add_device_option(parser)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(
    model: torch.nn.Module, size: int, batch: int, *, device: torch.device
) -> tuple[torch.Tensor, ...]:
    channels = int(getattr(model, "in_channels", 1))
    x = torch.randn(batch, channels, size, size, device=device)
    t = torch.full((batch,), 0.5, device=device)
    cond = torch.randn(batch, int(getattr(model, "cond_channels", 0)), size, size, device=device)
    return (x, t, cond if cond.shape[1] else None)  # type: ignore[return-value]


def _time_forward(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    repeats: int,
    *,
    device: torch.device,
    warm: bool = True,
) -> float:
    """Median ms of ``repeats`` forwards, after one untimed forward unless ``warm`` is False."""
    with torch.no_grad():
        if warm:
            model(*args)
        _sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*args)
            _sync(device)
            times.append(time.perf_counter() - t0)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def _train_rate(device: torch.device, steps: int, base: int | None) -> float:
    over = {"base": base} if base else {}
    model = build("ffm", **over).to(device).train()
    scheme = make_scheme("flow")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    low = torch.randn(2, 1, 128, 128, device=device)
    high = torch.randn(2, 1, 128, 128, device=device)
    amp = device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    for i in range(steps + 1):
        if i == 1:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = scheme.loss(model, low, high)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return 2 * steps / (time.perf_counter() - t0)


def _fast_row(
    model: FFM,
    sizes: list[int],
    repeats: int,
    plain_row: dict[str, object],
    *,
    device: torch.device,
) -> dict[str, object]:
    """The same FFM in its CPU inference form: times, fast/plain ratio, largest difference.

    The ratio comes from forwards of the two forms taken in turn (plain, fast, plain,
    fast...), so a machine that speeds up or slows down during the run (turbo, another
    process) moves both alike; timed one block after the other, the same build once read
    0.82 where in turn it reads 0.93 to 0.97 (base 64, 256 px, two cores).
    """
    row: dict[str, object] = {"model": "ffm-fast", "params_m": plain_row["params_m"]}
    for size in sizes:
        inputs = _inputs(model, size, 1, device=device)
        with torch.no_grad():
            plain_out = model.set_fast(False)(*inputs)
            fast_out = model.set_fast(True)(*inputs)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(max(repeats, 1)):
            for fast in (False, True):
                model.set_fast(fast)
                times[fast].append(_time_forward(model, inputs, 1, device=device, warm=False))
        plain_ms, fast_ms = (sorted(t)[len(t) // 2] for t in (times[False], times[True]))
        row[f"gflop_{size}"] = plain_row[f"gflop_{size}"]
        row[f"ms_{size}"] = round(fast_ms, 2)
        row[f"vs_plain_{size}"] = round(fast_ms / max(plain_ms, 1e-9), 3)
        row[f"max_diff_{size}"] = float((fast_out - plain_out).abs().max())
    model.set_fast(False)
    return row


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    device = resolve_device(args.device)
    rows = []
    for name in args.models:
        over = {"base": args.base} if args.base and "base" in MODELS[name].defaults else {}
        model = build(name, **over).to(device).eval()
        if isinstance(model, FFM):
            model.set_fast(False)  # this row is the authors' form; ffm-fast follows
        params = sum(p.numel() for p in model.parameters())
        row: dict[str, object] = {"model": name, "params_m": round(params / 1e6, 3)}
        for size in args.sizes:
            inputs = _inputs(model, size, 1, device=device)
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(*inputs)
            row[f"gflop_{size}"] = round(counter.get_total_flops() / 1e9, 2)
            row[f"ms_{size}"] = round(_time_forward(model, inputs, args.repeats, device=device), 2)
        rows.append(row)
        if isinstance(model, FFM) and device.type == "cpu":
            rows.append(_fast_row(model, args.sizes, args.repeats, row, device=device))
    rate = (
        _train_rate(device, args.train_steps, args.base)
        if "ffm" in args.models and args.train_steps
        else 0.0
    )
    print(
        f"device: {device} ({torch.get_num_threads()} CPU threads)"
        if device.type == "cpu"
        else f"device: {device}"
    )
    head = f"{'model':<10} {'params':>8}" + "".join(
        f" {'GFLOP@' + str(s):>11} {'ms@' + str(s):>9}" for s in args.sizes
    )
    print(head)
    for r in rows:
        cells = "".join(f" {r[f'gflop_{s}']:>11} {r[f'ms_{s}']:>9}" for s in args.sizes)
        print(f"{r['model']:<10} {r['params_m']:>7}M{cells}")
    for r in rows:
        if any(f"vs_plain_{s}" in r for s in args.sizes):
            ratios = ", ".join(
                f"{s} px {r[f'vs_plain_{s}']}x (max |diff| {r[f'max_diff_{s}']:.1e})"
                for s in args.sizes
            )
            print(f"ffm-fast time / ffm time: {ratios}")
    if rate:
        print(f"FFM training at 128 px, batch 2: {rate:.2f} images/s")
    reporter.done(status="ok", device=str(device), rows=rows, ffm_train_images_per_s=round(rate, 3))
    return 0
