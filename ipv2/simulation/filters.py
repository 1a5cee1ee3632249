"""Ramp filters for filtered back-projection.

The ramp is built in the spatial domain (Kak and Slaney, "Principles of Computerized
Tomographic Imaging", eq. 3.61: h[0] = 1/4, h[n odd] = -1/(pi n)^2, else 0) and then
transformed, rather than sampled as |f| in frequency: the sampled |f| is zero at DC and
loses the mean, which shows up as a cupped, biased reconstruction. The sinogram is
zero-padded to at least twice the detector length so the circular FFT convolution equals
the linear one over the detector.

Windows tame the high frequencies the ramp amplifies (noise): Ram-Lak (none),
Shepp-Logan (sinc), cosine and Hann (cos^2, our default, as in the authors' script).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ipv2.core.errors import InputError

if TYPE_CHECKING:
    import torch

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hann")


def check_filter(name: str) -> str:
    """Normalise a filter name, accepting scikit-image's spellings too."""
    key = name.strip().lower().replace("_", "-")
    key = {"ramp": "ram-lak", "ramlak": "ram-lak", "shepp": "shepp-logan", "hanning": "hann"}.get(
        key, key
    )
    if key not in FILTERS:
        raise InputError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")
    return key


def padded_length(n_det: int) -> int:
    """FFT length for filtering: a power of two at least twice the detector count."""
    return max(64, 1 << math.ceil(math.log2(2 * n_det)))


def ramp_response(n_fft: int, name: str, device: torch.device) -> torch.Tensor:
    """Real frequency response (n_fft // 2 + 1,) of the windowed ramp for ``rfft`` use."""
    import torch  # here: check_filter (the CLI's option check) must not load torch

    key = check_filter(name)
    n = torch.cat([torch.arange(0, n_fft // 2 + 1), torch.arange(-(n_fft // 2) + 1, 0)]).to(
        torch.float64
    )
    h = torch.zeros(n_fft, dtype=torch.float64)
    h[0] = 0.25
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    response = torch.fft.rfft(h).real
    f = torch.fft.rfftfreq(n_fft, dtype=torch.float64)  # cycles per sample, 0..0.5
    if key == "shepp-logan":
        window = torch.special.sinc(f)  # sin(pi f) / (pi f)
    elif key == "cosine":
        window = torch.cos(math.pi * f)
    elif key == "hann":
        window = torch.cos(math.pi * f) ** 2
    else:
        window = torch.ones_like(f)
    return (response * window).to(torch.float32).to(device)
