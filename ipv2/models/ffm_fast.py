"""FFM's frequency mixer for CPU inference: the same function as its plain form, cheaper.

:class:`ipv2.models.ffm.FrequencyMixer` computes, for an input ``x`` of C channels::

    s = cat(high(x[:C/2]), low(x[C/2:]))                  spatial branch
    u = fuse_proj(s + fuse_dw(s))
    f = irfft2(polar(mag_mlp(|rfft2 x|), phase_mlp(angle(rfft2 x))))
    y = x + project(cat(u, f))

Profiling a 256 px base-64 forward on one CPU core (``torch.profiler``) showed the
time going to convolutions (about two thirds; oneDNN runs the narrow ones faster on
channels-last tensors, see :mod:`ipv2.models.layouts`), the Fourier branch (a quarter:
complex ``abs``/``angle``/``polar`` are scalar loops, about 3x slower than vectorised
``hypot``/``atan2``/``cos``/``sin`` on real planes), ``cat`` copies and the 1x1
projections. So, with the module's own weights (and a transformed copy of the wide
convolutions' weights that :mod:`ipv2.models.winograd` caches):

- blocks up to ``CHANNELS_LAST_MAX`` channels run channels-last, wider ones NCHW (their
  Winograd convolutions work channels-last inside and hand back NCHW), and
  1x1 convolutions on channels-last maps are plain matrix products on their
  (pixels, channels) view;
- ``s + fuse_dw(s)`` is one depthwise convolution whose centre tap has 1 added, and
  ``project``'s spatial half times ``fuse_proj`` is folded into one C x C matrix (two
  linear maps in a row are one), which drops a full-resolution C x C product and both
  concatenations;
- the upsampled low half is written straight into its place in ``s``;
- the dense 3x3 convolutions from 64 input channels (each block's first, the low
  branch's, and the UNet's upsampling ones with their nearest x2 folded in) run as
  Winograd F(2x2, 3x3) (:mod:`ipv2.models.winograd`): the convolutions were left near
  the cores' peak by oneDNN, so only fewer multiplications could make them faster
  (0.86-0.91x to 0.73x of the authors' time at 256 px, 0.79x to 0.65x at 512 px);
- the FFTs stay on contiguous NCHW tensors (on channels-last they are 5x slower); the
  spectrum is split once into real and imaginary planes, magnitude and phase are taken
  with ``hypot``/``atan2``, both 1x1 MLPs run as one batched product, and the spectrum is
  rebuilt from ``cos``/``sin`` into an interleaved buffer.

The result equals the plain form up to float rounding (products summed in another
order): Testing/test_models.py compares the two on whole networks. Gradients are not
supported here (in-place updates); training keeps the plain form.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ipv2.models.common import ResBlock
from ipv2.models.layouts import (
    CHANNELS_LAST_MAX,
    is_channels_last,
    pointwise,
    rows_view,
    to_layout,
)
from ipv2.models.winograd import conv3x3


class MixerLayers(Protocol):
    """The layers of :class:`ipv2.models.ffm.FrequencyMixer` this path reads."""

    n_high: int
    high: nn.Sequential
    low: nn.Sequential
    fuse_dw: nn.Conv2d
    fuse_proj: nn.Conv2d
    magnitude: nn.Sequential
    phase: nn.Sequential
    project: nn.Conv2d


def _conv(layer: nn.Module) -> nn.Conv2d:
    assert isinstance(layer, nn.Conv2d)
    return layer


def wants_channels_last(block: ResBlock) -> bool:
    """The layout a block runs in, from its width (see :mod:`ipv2.models.layouts`)."""
    return block.conv1.out_channels <= CHANNELS_LAST_MAX


def block_fast_forward(block: ResBlock, x: Tensor, temb: Tensor) -> Tensor:
    """:class:`ResBlock`'s forward in the block's layout (eval mode, no autograd).

    The same operations, with in-place activations and additions.
    """
    cl = wants_channels_last(block)
    x = to_layout(x, cl)
    h = to_layout(conv3x3(block.conv1, F.silu(block.norm1(x), inplace=True)), cl)
    h += block.temb(F.silu(temb))[:, :, None, None]
    h = block.conv2(F.silu(block.norm2(h), inplace=True))  # dropout: identity in eval
    skip = block.skip
    if isinstance(skip, nn.Conv2d):
        return pointwise(x, skip.weight, skip.bias).add_(h)
    return h.add_(x)


def mixer_fast_forward(mixer: MixerLayers, x: Tensor) -> Tensor:
    """The frequency mixer's output for float32 ``x`` on the CPU, without autograd.

    ``mixer`` is an :class:`ipv2.models.ffm.FrequencyMixer` (not imported: that module
    imports this one). The result keeps ``x``'s layout (NCHW unless channels-last).
    """
    b, c, height, width = x.shape
    u = _spatial(mixer, x)
    f = _fourier(mixer, x)  # NCHW
    project = mixer.project.weight.view(c, 2 * c)
    folded = project[:, :c] @ mixer.fuse_proj.weight.view(c, c)
    bias = torch.addmv(_bias(mixer.project), project[:, :c], _bias(mixer.fuse_proj))
    if is_channels_last(x):
        out = torch.add(rows_view(x), bias)
        out.addmm_(rows_view(u), folded.t())
        per_image = out.view(b, height * width, c)
        for i in range(b):  # f[i] as (channels, pixels), transposed: a free view
            per_image[i].addmm_(f[i].view(c, -1).t(), project[:, c:].t())
        return out.view(b, height, width, c).permute(0, 3, 1, 2)
    out = torch.add(x, bias[:, None, None])
    for i in range(b):
        image = out[i].view(c, -1)
        image.addmm_(folded, u[i].view(c, -1))
        image.addmm_(project[:, c:], f[i].view(c, -1))
    return out


def _spatial(mixer: MixerLayers, x: Tensor) -> Tensor:
    """``s + fuse_dw(s)`` as one depthwise convolution, in ``x``'s layout."""
    b, c, height, width = x.shape
    n_high = int(mixer.n_high)
    first, depthwise = _conv(mixer.high[0]), mixer.high[1]
    s = torch.empty_like(x)  # keeps x's layout
    s[:, :n_high] = F.gelu(depthwise(pointwise(x[:, :n_high], first.weight, first.bias)))
    pool, conv, norm, gelu = mixer.low[0], _conv(mixer.low[1]), mixer.low[2], mixer.low[3]
    low = conv3x3(conv, pool(x[:, n_high:]))  # pool, conv, GroupNorm, GELU
    low = gelu(norm(to_layout(low, is_channels_last(x))))  # (B, C/2, H/2, W/2)
    # Nearest x2 upsampling and the concatenation in one copy: each low pixel fills a
    # 2 x 2 block of s's low channels.
    if is_channels_last(s):
        blocks = s.permute(0, 2, 3, 1).view((b, height // 2, 2, width // 2, 2, c))
        blocks[..., n_high:] = low.permute(0, 2, 3, 1)[:, :, None, :, None, :]
    else:
        blocks = s.view((b, c, height // 2, 2, width // 2, 2))
        blocks[:, n_high:] = low[:, :, :, None, :, None]
    dw = mixer.fuse_dw
    weight = dw.weight.clone()
    weight[:, 0, 1, 1] += 1.0  # s + dw(s): the identity is a centre tap of 1
    return F.conv2d(s, weight, dw.bias, padding=1, groups=c)


def _fourier(mixer: MixerLayers, x: Tensor) -> Tensor:
    """The Fourier branch, NCHW out; magnitude and phase MLPs as one batched product."""
    b, c, height, width = x.shape
    spec = torch.fft.rfft2(to_layout(x, False), norm="ortho")  # (B, C, H, W/2+1)
    half = spec.shape[-1]
    # Real and imaginary planes as (2, C, B*H*Wf), ready for the channel products.
    planes = torch.view_as_real(spec).permute((4, 1, 0, 2, 3)).contiguous().view(2, c, -1)
    polar_in = torch.empty_like(planes)
    torch.hypot(planes[0], planes[1], out=polar_in[0])
    torch.atan2(planes[1], planes[0], out=polar_in[1])
    first = [_conv(mixer.magnitude[0]), _conv(mixer.phase[0])]
    second = [_conv(mixer.magnitude[2]), _conv(mixer.phase[2])]
    hidden = torch.baddbmm(_stack_bias(first), _stack_weight(first, c), polar_in)
    F.leaky_relu(hidden, 0.1, inplace=True)
    mag_pha = torch.baddbmm(_stack_bias(second), _stack_weight(second, c), hidden)
    mag = mag_pha[0].view(c, b, height, half).permute(1, 0, 2, 3)
    pha = mag_pha[1].view(c, b, height, half).permute(1, 0, 2, 3)
    rebuilt = torch.empty((b, c, height, half, 2), dtype=x.dtype, device=x.device)
    torch.mul(mag, torch.cos(pha), out=rebuilt[..., 0])
    torch.mul(mag, torch.sin(pha), out=rebuilt[..., 1])
    return torch.fft.irfft2(torch.view_as_complex(rebuilt), s=(height, width), norm="ortho")


def _stack_weight(convs: list[nn.Conv2d], c: int) -> Tensor:
    return torch.stack([conv.weight.view(c, c) for conv in convs])


def _stack_bias(convs: list[nn.Conv2d]) -> Tensor:
    return torch.stack([_bias(conv) for conv in convs])[:, :, None]


def _bias(conv: nn.Conv2d) -> Tensor:
    # Every FFM convolution has a bias (method.md); a missing one is a wrong network.
    assert conv.bias is not None
    return conv.bias
