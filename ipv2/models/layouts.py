"""Memory layouts for CPU inference: which one a layer wants, and cheap conversions.

oneDNN's 3x3 convolutions run faster on channels-last (NHWC) tensors while the channel
count is small (measured on one core for the FFM's shapes at 256 px: 64 -> 64 at
256 x 256 61 against 77 ms, depthwise 15 against 37 ms) and slower from 256 channels on
(512 -> 512 at 64 x 64: 239 against 215 ms). FFTs want contiguous NCHW. So feature maps
change layout between levels, and :func:`to_layout` does it with one blocked 2D
transpose per image: torch's general 4D layout copy took 42 ms for a 64 x 256 x 256 map
where the transpose takes 8.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# Widest output at which a layer runs channels-last (from the measurements above). With
# the wide 3x3 convolutions done by Winograd (channels-last inside, ipv2.models.winograd)
# running every block channels-last was measured no faster (0.765x the authors' time at
# 256 px either way), so the limit stayed.
CHANNELS_LAST_MAX = 128


def is_channels_last(x: Tensor) -> bool:
    """True for a 4D tensor laid out NHWC and not also plainly contiguous."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def to_layout(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in the asked layout: itself when already so, else one transpose per image."""
    b, c, height, width = x.shape
    if channels_last:
        if x.is_contiguous(memory_format=torch.channels_last):
            return x
        cols = x.contiguous().view(b, c, height * width)
        rows = torch.empty(b, height * width, c, dtype=x.dtype, device=x.device)
        for i in range(b):
            rows[i] = cols[i].t()
        return rows.view(b, height, width, c).permute(0, 3, 1, 2)
    if x.is_contiguous():
        return x
    src = x.contiguous(memory_format=torch.channels_last)
    src_rows = src.permute(0, 2, 3, 1).reshape(b, height * width, c)
    out = torch.empty(b, c, height * width, dtype=x.dtype, device=x.device)
    for i in range(b):
        out[i] = src_rows[i].t()
    return out.view(b, c, height, width)


def rows_view(x: Tensor) -> Tensor:
    """The (pixels, channels) matrix of a channels-last tensor, without a copy."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 convolution returned in ``x``'s layout.

    On channels-last it is one matrix product on the (pixels, channels) view; torch's
    own 1x1 path on one thread would convert to NCHW and back around the product.
    """
    if not is_channels_last(x):
        return F.conv2d(x, weight, bias)
    b, _, height, width = x.shape
    out = F.linear(rows_view(x), weight.view(weight.shape[0], -1), bias)
    return out.view(b, height, width, -1).permute(0, 3, 1, 2)
