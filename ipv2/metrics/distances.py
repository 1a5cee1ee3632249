"""Distances between two feature sets: FID (Fréchet) and KID (kernel MMD).

FID (Heusel et al. 2017) fits a Gaussian to each set and takes the Fréchet distance
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. It is biased for small sets, which is
why the paper also reports KID (Bińkowski et al. 2018): the unbiased estimate of the
squared MMD under the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged
over random subsets. Its expectation is exactly 0 when both sets come from one
distribution, so small negative values are normal. The standard subset size is 1000;
test sets of a few hundred slices cannot fill that, so the size shrinks to the smaller
set and the report says which size was used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg

from ipv2.core.errors import InputError

Features = npt.NDArray[np.float64]

STANDARD_KID_SUBSET = 1000
STANDARD_KID_SUBSETS = 100


def _check(features: npt.ArrayLike, what: str, minimum: int = 2) -> Features:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise InputError(f"{what}: features must be an (N, D) matrix, got shape {f.shape}")
    if f.shape[0] < minimum:
        raise InputError(
            f"{what}: {f.shape[0]} image(s) is too few for a distribution metric; give at "
            f"least {minimum} slices (dozens to hundreds for meaningful FID/KID)"
        )
    if not np.isfinite(f).all():
        raise InputError(f"{what}: features contain NaN or infinite values")
    return f


def gaussian_stats(features: npt.ArrayLike, what: str = "features") -> tuple[Features, Features]:
    """Mean vector and (unbiased, N-1) covariance matrix of the rows."""
    f = _check(features, what)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm(matrix: Features) -> npt.NDArray[np.complex128] | Features:
    """``scipy.linalg.sqrtm`` without its singular-matrix warning.

    Singular products are expected (fewer slices than feature dimensions); the caller
    checks the result for non-finite values instead of relying on the warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return np.asarray(linalg.sqrtm(matrix))


def _real_sqrtm(matrix: Features) -> Features | None:
    """Real part of sqrtm, or None when it is non-finite or has a large imaginary part."""
    root = _sqrtm(matrix)
    if not np.isfinite(root).all():
        return None
    if np.iscomplexobj(root):
        imag = float(np.max(np.abs(root.imag)))
        if imag > 1e-3 * max(float(np.max(np.abs(root.real))), 1e-12):
            return None
        return np.asarray(root.real, dtype=np.float64)
    return np.asarray(root, dtype=np.float64)


def frechet_distance(
    mu1: Features, sigma1: Features, mu2: Features, *, sigma2: Features, eps: float = 1e-6
) -> float:
    """Fréchet distance between two Gaussians, robust to near-singular covariances.

    ``sqrtm`` of a product of singular covariances (fewer images than dimensions, the
    usual case here) can come back non-finite or with an imaginary part from round-off. A
    small imaginary part is dropped, as in the reference FID code; otherwise the product
    is retried with ``eps`` added to both diagonals, and if that fails too the user is
    told why rather than given a meaningless number.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise InputError(
            f"feature dimensions differ ({mu1.shape} vs {mu2.shape}); both sets must come "
            "from the same extractor"
        )
    diff = mu1 - mu2
    covmean = _real_sqrtm(sigma1 @ sigma2)
    if covmean is None:
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _real_sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if covmean is None:
        raise InputError(
            f"FID is numerically unreliable here: the covariance square root failed for "
            f"{sigma1.shape[0]}-dimensional features (usually far fewer slices than feature "
            "dimensions); use more slices, or rely on KID for small sets"
        )
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    # Round-off can make identical sets come out as -1e-12; a distance is never negative.
    return max(value, 0.0)


def fid_from_features(pred: npt.ArrayLike, label: npt.ArrayLike) -> float:
    """FID between two feature matrices (rows are images)."""
    mu1, s1 = gaussian_stats(pred, "predictions")
    mu2, s2 = gaussian_stats(label, "labels")
    return frechet_distance(mu1, s1, mu2, sigma2=s2)


@dataclass(frozen=True)
class KidResult:
    """KID mean and standard deviation over subsets, with the sampling that produced them."""

    mean: float
    std: float
    subset_size: int
    subsets: int
    shrunk: bool  # True when the subset size is below the standard 1000

    def to_json(self) -> dict[str, object]:
        return {
            "kid": self.mean,
            "kid_std": self.std,
            "kid_x100": self.mean * 100.0,
            "kid_subset_size": self.subset_size,
            "kid_subsets": self.subsets,
            "kid_subset_shrunk": self.shrunk,
        }


def polynomial_kernel(x: Features, y: Features) -> Features:
    """KID's kernel: (x.y / d + 1)^3, d the feature dimension."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Features, y: Features) -> float:
    """Unbiased squared MMD: self-similarities leave out the diagonal (i = j) terms."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid_subset_size(n_pred: int, n_label: int, requested: int = STANDARD_KID_SUBSET) -> int:
    """The standard 1000, or the smaller set's size when a set has fewer images."""
    if requested < 2:
        raise InputError(f"KID subset size must be at least 2, got {requested}")
    return min(requested, n_pred, n_label)


def kid(
    pred: npt.ArrayLike,
    label: npt.ArrayLike,
    subsets: int = STANDARD_KID_SUBSETS,
    *,
    subset_size: int = STANDARD_KID_SUBSET,
    seed: int = 0,
) -> KidResult:
    """KID: mean unbiased MMD^2 over ``subsets`` random subsets drawn without replacement."""
    x, y = _check(pred, "predictions"), _check(label, "labels")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"feature dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if subsets < 1:
        raise InputError(f"KID needs at least one subset, got {subsets}")
    size = kid_subset_size(x.shape[0], y.shape[0], subset_size)
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        xi = x[rng.choice(x.shape[0], size, replace=False)]
        yi = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(xi, yi)
    return KidResult(
        mean=float(values.mean()),
        std=float(values.std()),
        subset_size=size,
        subsets=subsets,
        shrunk=size < STANDARD_KID_SUBSET,
    )
