"""``ipv2 bench mixer``: FFM's frequency mixer against a plain rewrite of the same blocks.

The plain rewrite slices and clones the channel halves, computes magnitude and phase
with ``sqrt``/``atan2`` and rebuilds the spectrum from ``cos``/``sin`` — how the blocks
read when transcribed literally. Both share weights and give the same output (checked);
the figures show what the engine's formulation (one split, ``abs``/``angle``/``polar``)
saves per forward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from ipv2.core.devices import resolve_device
from ipv2.core.events import Reporter
from ipv2.models.ffm import FrequencyMixer


class PlainMixer(nn.Module):
    """The same computation as :class:`FrequencyMixer`, written literally (reference)."""

    def __init__(self, mixer: FrequencyMixer) -> None:
        super().__init__()
        self.m = mixer

    def forward(self, x: Tensor) -> Tensor:
        m = self.m
        high = x[:, : m.n_high].clone()
        low = x[:, m.n_high :].clone()
        s = torch.cat([m.high(high), m.low(low)], dim=1)
        s = m.fuse_proj(s + m.fuse_dw(s))
        spec = torch.fft.rfft2(x, norm="ortho")
        mag = m.magnitude(torch.sqrt(spec.real**2 + spec.imag**2))
        pha = m.phase(torch.atan2(spec.imag, spec.real))
        z = torch.complex(mag * torch.cos(pha), mag * torch.sin(pha))
        f = torch.fft.irfft2(z, s=x.shape[-2:], norm="ortho")
        return x + m.project(torch.cat([s, f], dim=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=256, help="feature map size (default 256)")
    parser.add_argument("--channels", type=int, default=64, help="channels (default 64)")
    parser.add_argument("--batch", type=int, default=2, help="batch (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards (default 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def _time(fn: nn.Module, x: Tensor, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        fn(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    device = resolve_device(args.device)
    torch.manual_seed(0)
    mixer = FrequencyMixer(args.channels).to(device).eval()
    plain = PlainMixer(mixer).eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    with torch.inference_mode():
        same = torch.allclose(mixer(x), plain(x), atol=1e-3)
        ours = _time(mixer, x, args.repeats)
        literal = _time(plain, x, args.repeats)
    shape = (args.batch, args.channels, args.size, args.size)
    print(f"frequency mixer on {device}, input {shape} (same output: {same})", flush=True)
    print(f"  ipv2 FrequencyMixer  {ours:9.1f} ms per forward", flush=True)
    print(
        f"  plain rewrite        {literal:9.1f} ms per forward  (x{literal / ours:.2f})", flush=True
    )
    reporter.metric("mixer_ms", ours)
    reporter.metric("plain_mixer_ms", literal)
    return 0 if same else 1
