"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for CPU inference.

Why: on CPUs without AVX-512 (where oneDNN offers no Winograd; the machines measured
here), the FFM's dense 3x3 convolutions already run near the cores' peak (160-185 GFLOP/s on two AVX2 cores) and
take over half of a forward. F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016) computes each 2 x 2 output tile from a 4 x 4 input
tile with 16 instead of 36 multiplications per channel pair: the input tiles and the
weights are transformed (``B^T d B``, ``G g G^T``), multiplied channel-wise as 16 matrix
products, and the products transformed back (``A^T m A``). Only the matrix products
scale with both channel counts, so the saving grows with width.

The transforms are memory-bound: done over a whole 128 x 128 map they cost more than the
products save. So the image is processed in bands of tile rows whose transformed tiles
fit in the L3 cache (``BAND_BYTES``); measured on two cores, banding turned a 256 -> 256
convolution at 128 x 128 from 99 to 61 ms against oneDNN's 99 to 104 ms.

Nearest x2 upsampling followed by a 3x3 convolution (the UNet's ``Upsample``) is done in
one pass: a 4 x 4 tile of the upsampled map repeats its middle rows and columns, so one
of the four transformed rows (and columns) is zero and 9 of the 16 products remain, read
from the small map directly.

The transforms only add, subtract, halve and double, so the result differs from a direct
convolution by float rounding: a few 1e-6 of the output's range (Testing/test_winograd.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Transformed tiles and products of one band (bytes): a quarter of the 32 MiB L3 cache
# of the machines measured; 1, 2, 4 and 8 MiB were tried, 8 was fastest or equal.
BAND_BYTES = 8 << 20

# Narrower convolutions stay with oneDNN: at 64 input channels the two tie.
MIN_IN_CHANNELS = 64

# G: the weight transform of F(2x2, 3x3).
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

# Transformed components present for a plain and for an upsampled input (see the
# module docstring: component 2 of an upsampled tile is zero).
_ALL = (0, 1, 2, 3)
_UPSAMPLED = (0, 1, 3)


@dataclass(frozen=True)
class _Cached:
    """A convolution's transformed weight and what it was made from.

    ``source`` (the weight, detached: same storage and version counter) is held so its
    memory cannot be freed and handed to a new weight at the same address.
    """

    source: Tensor
    version: int
    comps: tuple[int, ...]
    transformed: Tensor


_weights: weakref.WeakKeyDictionary[nn.Conv2d, _Cached] = weakref.WeakKeyDictionary()


def clear() -> None:
    """Forget every cached transformed weight.

    Needed only after editing a weight through ``.data`` in place, the one change its
    version counter does not see (``load_state_dict``, optimisers, ``.to()`` and in-place
    updates of the parameter itself are all noticed).
    """
    _weights.clear()


def applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether :func:`conv3x3` computes ``conv(x)`` by Winograd (else it calls ``conv``)."""
    return (
        type(conv) is nn.Conv2d  # a subclass may compute something else
        and not conv._forward_hooks
        and not conv._forward_pre_hooks
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels >= MIN_IN_CHANNELS
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.ndim == 4
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def conv3x3(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``; by Winograd (result channels-last) where :func:`applies` holds."""
    if not applies(conv, x):
        return conv(x)
    return _convolve(conv, x, upsampled=False)


def upsample_conv3x3(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(nearest_x2(x))`` without making the upsampled map where it applies."""
    if not applies(conv, x):
        return conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    return _convolve(conv, x, upsampled=True)


def transformed_weight(conv: nn.Conv2d, comps: tuple[int, ...] = _ALL) -> Tensor:
    """``G g G^T`` of ``conv``'s weight as (components^2, in, out).

    Cached per convolution until its weight changes (another tensor, or the same one
    updated in place: see :func:`clear` for the exception). Costs 16/9 (upsampling: 1)
    of the weight's memory, held in this module (not in the model's state dict).
    """
    weight = conv.weight.detach()
    if weight.is_inference():  # made under torch.inference_mode: no version counter
        return _transform(weight, comps)
    cached = _weights.get(conv)
    if (
        cached is not None
        and cached.source.data_ptr() == weight.data_ptr()
        and cached.source.dtype == weight.dtype
        and cached.version == weight._version
        and cached.comps == comps
    ):
        return cached.transformed
    transformed = _transform(weight, comps)
    _weights[conv] = _Cached(weight, weight._version, comps, transformed)
    return transformed


def _transform(weight: Tensor, comps: tuple[int, ...]) -> Tensor:
    g = torch.tensor(_G, dtype=weight.dtype, device=weight.device)
    u = g @ weight @ g.t()  # (out, in, 4, 4)
    out_ch, in_ch = u.shape[:2]
    u = u[:, :, list(comps)][:, :, :, list(comps)]
    return u.permute(2, 3, 1, 0).reshape(len(comps) ** 2, in_ch, out_ch).contiguous()


def _convolve(conv: nn.Conv2d, x: Tensor, *, upsampled: bool) -> Tensor:
    comps = _UPSAMPLED if upsampled else _ALL
    u = transformed_weight(conv, comps)
    bias = conv.bias if conv.bias is not None else x.new_zeros(conv.out_channels)
    batch, channels, height, width = x.shape
    if upsampled:
        height, width = 2 * height, 2 * width
    # The zero-padded input (the small map when upsampled), channels-last.
    pad_h, pad_w = x.shape[-2] + 2, x.shape[-1] + 2
    padded = x.new_zeros(pad_h, pad_w, channels)
    out = x.new_empty((batch, height // 2, 2, width // 2, 2, conv.out_channels))
    for i in range(batch):
        padded[1:-1, 1:-1] = x[i].permute(1, 2, 0)
        _convolve_image(padded, u, bias, out=out[i], comps=comps)
    return out.view(batch, height, width, -1).permute(0, 3, 1, 2)


def _convolve_image(
    padded: Tensor, u: Tensor, bias: Tensor, *, out: Tensor, comps: tuple[int, ...]
) -> None:
    """One image into ``out`` (H/2, 2, W/2, 2, out), one band of tile rows at a time."""
    tile_rows, tile_cols = out.shape[0], out.shape[2]
    channels, out_ch = padded.shape[-1], out.shape[-1]
    n_comp = len(comps)
    per_row = n_comp * n_comp * tile_cols * (channels + out_ch) * padded.element_size()
    band = max(1, min(tile_rows, BAND_BYTES // per_row))
    rows = padded.new_empty((n_comp, band, padded.shape[1], channels))
    tiles = padded.new_empty((n_comp, n_comp, band, tile_cols, channels))
    half = padded.new_empty((2, n_comp, band, tile_cols, out_ch))
    for start in range(0, tile_rows, band):
        n = min(band, tile_rows - start)
        r = rows[:, :n]
        _forward_1d(_taps(padded, start, n, dim=0, comps=comps), list(r), comps)
        v = tiles[:, :, :n]  # all rows' components at once, along the columns
        _forward_1d(_taps(r, 0, tile_cols, dim=2, comps=comps), list(v.unbind(1)), comps)
        m = torch.bmm(v.reshape(n_comp * n_comp, n * tile_cols, channels), u)
        m = m.view((n_comp, n_comp, n, tile_cols, out_ch))
        h = half[:, :, :n]
        _inverse_1d(list(m), h[0], h[1], comps)
        o = out[start : start + n].transpose(0, 1)  # (2, n, W/2, 2, out)
        _inverse_1d(list(h.unbind(1)), o[..., 0, :], o[..., 1, :], comps)
        o += bias


def _taps(x: Tensor, start: int, n: int, *, dim: int, comps: tuple[int, ...]) -> list[Tensor]:
    """The four input rows or columns (along ``dim``) feeding tiles ``start..start+n``.

    Plain: tile ``t`` reads padded positions ``2t .. 2t+3``. Upsampled: the small map's
    padded positions ``t, t+1, t+1, t+2`` (positions 1 and 2 repeat).
    """
    if comps == _ALL:
        every_other = (slice(None),) * dim + (slice(None, None, 2),)
        return [x.narrow(dim, 2 * start + k, 2 * n - 1)[every_other] for k in range(4)]
    first, middle, last = (x.narrow(dim, start + k, n) for k in range(3))
    return [first, middle, middle, last]


def _forward_1d(d: list[Tensor], out: list[Tensor], comps: tuple[int, ...]) -> None:
    """``B^T d`` along one axis: d0 - d2, d1 + d2, d2 - d1, d1 - d3 (components present)."""
    rules = {
        0: (d[0], d[2], -1.0),
        1: (d[1], d[2], 1.0),
        2: (d[2], d[1], -1.0),
        3: (d[1], d[3], -1.0),
    }
    for target, comp in zip(out, comps, strict=True):
        left, right, sign = rules[comp]
        if comps == _UPSAMPLED and comp == 1:
            torch.mul(left, 2.0, out=target)  # d1 + d2 with d1 == d2
        else:
            torch.add(left, right, alpha=sign, out=target)


def _inverse_1d(m: list[Tensor], first: Tensor, second: Tensor, comps: tuple[int, ...]) -> None:
    """``A^T m`` along one axis: m0 + m1 + m2 and m1 - m2 - m3 (components present)."""
    part = dict(zip(comps, m, strict=True))
    torch.add(part[0], part[1], out=first)
    torch.sub(part[1], part[3], out=second)
    if 2 in part:
        first.add_(part[2])
        second.sub_(part[2])
