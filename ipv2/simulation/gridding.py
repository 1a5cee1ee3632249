"""Kaiser-Bessel gridding: the fast route between an image and its polar Fourier samples.

A parallel-beam projection at angle theta is, by the Fourier slice theorem, the inverse
1D Fourier transform of the image spectrum along the line ``omega * (cos, -sin)``. We
evaluate the image's discrete-time Fourier transform on those polar points with a
non-uniform FFT of type 2: divide the image by the kernel's Fourier transform
("deapodisation"), zero-pad it to a twice oversampled grid, FFT, and interpolate each
polar point from its 6 x 6 grid neighbours with a Kaiser-Bessel kernel. Back-projection
is the adjoint (type 1): spread the polar samples onto the grid with the same weights,
inverse FFT, deapodise.

The interpolation weights depend only on the geometry, so they are stored once as a
sparse CSR matrix (rows: polar points, columns: grid cells) and applied with one sparse
matrix product per batch. That turns the O(N^3) pixel-by-ray work of a rotate-and-sum
projector into an FFT plus ~36 multiply-adds per polar sample, which is why the CPU path
is far faster than scikit-image while staying accurate to ~1e-5 of the exact
band-limited line integrals (see the tests). The same tensors run on CUDA unchanged.

Kernel width 6 and oversampling 2 with Beatty's shape parameter are the standard
accuracy/speed trade-off for gridding (Beatty, Nishimura and Pauly, IEEE TMI 2005).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

KERNEL_WIDTH = 6
OVERSAMPLING = 2.0


def _beta(width: int, sigma: float) -> float:
    """Beatty et al.'s Kaiser-Bessel shape parameter for a given width and oversampling."""
    return math.pi * math.sqrt((width / sigma) ** 2 * (sigma - 0.5) ** 2 - 0.8)


def kaiser_bessel(u: torch.Tensor, width: int, beta: float) -> torch.Tensor:
    """The interpolation kernel at offsets ``u`` (grid cells); zero outside |u| <= width/2."""
    x = 1.0 - (2.0 * u / width) ** 2
    inside = x > 0
    vals = torch.special.i0(beta * torch.sqrt(x.clamp(min=0.0)))
    return torch.where(inside, vals, torch.zeros_like(vals))


def kaiser_bessel_ft(nu: torch.Tensor, width: int, beta: float) -> torch.Tensor:
    """Continuous Fourier transform of :func:`kaiser_bessel` at ``nu`` cycles per grid cell."""
    z2 = beta**2 - (math.pi * width * nu) ** 2
    z = torch.sqrt(z2.clamp(min=1e-12))
    return width * torch.sinh(z) / z


def smooth_length(n: int) -> int:
    """The smallest even length >= n whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    m = max(2, n + (n % 2))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


@dataclass(frozen=True)
class PolarGridding:
    """Sparse interpolation between a G x G oversampled spectrum and polar samples.

    ``forward`` (n_views * (n_freq), G*G) gathers polar samples from the grid;
    ``adjoint`` is its transpose, stored as its own CSR matrix because a transposed CSR
    product is slow on CPU. ``deapodisation`` (H, W) divides the image before the FFT
    (type 2) and after the inverse FFT (type 1).
    """

    grid: int
    forward: torch.Tensor
    adjoint: torch.Tensor
    deapodisation: torch.Tensor


def build_polar_gridding(
    height: int,
    width: int,
    angles: torch.Tensor,
    *,
    freq_cycles: torch.Tensor,
    center: tuple[int, int],
    device: torch.device,
) -> PolarGridding:
    """Interpolation weights for the points ``freq * (cos a, -sin a)`` (cycles per pixel).

    ``angles`` are radians; ``freq_cycles`` the non-negative radial frequencies (the
    sinogram is real, so the negative half follows by Hermitian symmetry). Image pixel
    ``(row, col)`` sits at ``x = col - center[1]``, ``y = row - center[0]``; the detector
    coordinate is ``t = x cos a - y sin a`` (scikit-image's convention).
    """
    sigma = OVERSAMPLING
    w = KERNEL_WIDTH
    grid = int(2 * math.ceil(sigma * max(height, width) / 2))
    beta = _beta(w, sigma)
    a = angles.to(torch.float64)
    f = freq_cycles.to(torch.float64)
    xi = (f[None, :] * torch.cos(a)[:, None] * grid).reshape(-1)
    eta = (-f[None, :] * torch.sin(a)[:, None] * grid).reshape(-1)
    offsets = torch.arange(w, dtype=torch.float64) - (w // 2 - 1)
    mx = torch.floor(xi)[:, None] + offsets[None, :]
    my = torch.floor(eta)[:, None] + offsets[None, :]
    wx = kaiser_bessel(xi[:, None] - mx, w, beta)
    wy = kaiser_bessel(eta[:, None] - my, w, beta)
    n_pts = xi.numel()
    taps = w * w
    values = (wy[:, :, None] * wx[:, None, :]).reshape(-1).to(torch.float32)
    cols = ((my.long() % grid)[:, :, None] * grid + (mx.long() % grid)[:, None, :]).reshape(-1)
    crow = torch.arange(0, n_pts * taps + 1, taps, dtype=torch.int64)
    order = torch.argsort(cols, stable=True)
    counts = torch.bincount(cols, minlength=grid * grid)
    crow_t = torch.zeros(grid * grid + 1, dtype=torch.int64)
    crow_t[1:] = torch.cumsum(counts, 0)
    # 32-bit indices halve the memory and speed the products up by about a third.
    index = torch.int32 if max(n_pts * taps, grid * grid) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():
        # torch flags sparse CSR as "beta"; the two products used here are stable.
        warnings.simplefilter("ignore", UserWarning)
        forward = torch.sparse_csr_tensor(
            crow.to(index), cols.to(index), values, size=(n_pts, grid * grid)
        )
        adjoint = torch.sparse_csr_tensor(
            crow_t.to(index), (order // taps).to(index), values[order], size=(grid * grid, n_pts)
        )

    cy, cx = center
    ny = (torch.arange(height, dtype=torch.float64) - cy) / grid
    nx = (torch.arange(width, dtype=torch.float64) - cx) / grid
    deap = kaiser_bessel_ft(ny, w, beta)[:, None] * kaiser_bessel_ft(nx, w, beta)[None, :]
    return PolarGridding(
        grid=grid,
        forward=forward.to(device),
        adjoint=adjoint.to(device),
        deapodisation=deap.to(torch.float32).to(device),
    )
