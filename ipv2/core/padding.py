"""Scanner padding: the constant fill outside the reconstruction circle.

Real series fill the corners outside the reconstructed field of view with a constant far
below air (-1024, -2000, -2048, -3024 HU, or the minimum of the stored integer type).
Those pixels are not anatomy: Otsu thresholds, noise simulation and statistics must
ignore them, and outputs must keep them exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ipv2.core.binary_ops import BinaryOps, default_ops
from ipv2.core.errors import InputError
from ipv2.core.thread_pool import map_slices

BoolArray = npt.NDArray[np.bool_]

# Values scanners are known to use; anything at or below air that fills a large
# border-connected constant region is accepted as padding as well.
KNOWN_PADDING_HU = (-1024.0, -2000.0, -2048.0, -3024.0, -32768.0)
_MAX_PADDING_HU = -1000.0
_MIN_REGION_FRACTION = 0.002


@dataclass(frozen=True)
class PaddingReport:
    """Where padding was found: a voxel mask and the constant used on each slice."""

    mask: BoolArray
    values: tuple[float | None, ...]

    @property
    def found(self) -> bool:
        return bool(self.mask.any())

    def summary(self) -> dict[str, object]:
        used = sorted({v for v in self.values if v is not None})
        return {
            "padding_values_hu": used,
            "padding_fraction": float(self.mask.mean()),
            "slices_with_padding": int(sum(v is not None for v in self.values)),
        }


def detect_padding(array: npt.ArrayLike) -> PaddingReport:
    """Find border-connected constant regions at or below air, slice by slice.

    Candidates are the slice minimum and the known padding values (at most -1000 HU). A
    candidate counts when the pixels holding exactly that value include a connected
    region touching the slice border that covers a noticeable area. Scattered pixels
    clipped at -1024 inside noisy air never form such a region, so ordinary slices report
    no padding.
    """
    vol = np.asarray(array, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[np.newaxis]
    if vol.ndim != 3:
        raise InputError(f"padding detection needs a 2D slice or a 3D volume, got {vol.shape}")
    mask = np.zeros(vol.shape, dtype=bool)

    def one(k: int) -> float | None:
        found, value = _find_padding(vol[k])
        if found is not None:
            mask[k] = found
        return value

    return PaddingReport(mask=mask, values=tuple(map_slices(one, vol.shape[0])))


def slice_padding(sl: npt.NDArray[np.float32], ops: BinaryOps | None = None) -> BoolArray | None:
    """The padding of one slice (as :func:`detect_padding`), or None when it has none."""
    return _find_padding(sl, ops or default_ops())[0]


def _find_padding(
    sl: npt.NDArray[np.float32], ops: BinaryOps | None = None
) -> tuple[BoolArray | None, float | None]:
    ops = ops or default_ops()
    min_pixels = max(16, int(_MIN_REGION_FRACTION * sl.shape[0] * sl.shape[1]))
    mask: BoolArray | None = None
    found: float | None = None
    edges = np.concatenate([sl[0], sl[-1], sl[:, 0], sl[:, -1]])
    for value in _candidates(sl):
        if not (edges == value).any():
            continue  # padding always reaches the border; nothing to label
        region = _border_region(sl == value, min_pixels, ops)
        if region is not None:
            mask = region if mask is None else mask | region
            found = value if found is None else min(found, value)
    return mask, found


def _candidates(sl: npt.NDArray[np.float32]) -> list[float]:
    """The slice minimum, plus known padding values (noise may dip below a -1024 fill)."""
    lowest = float(sl.min())
    out = [lowest] if lowest <= _MAX_PADDING_HU else []
    out += [v for v in KNOWN_PADDING_HU if v > lowest and v <= _MAX_PADDING_HU]
    return out


def _border_region(candidate: BoolArray, min_pixels: int, ops: BinaryOps) -> BoolArray | None:
    """Large connected parts of ``candidate`` that touch the slice border, if any.

    Every such part holds a run of set pixels along an edge, so one seed per run finds
    them all by flood fill, without labelling the rest of the slice.
    """
    if int(candidate.sum()) < min_pixels:
        return None
    h, w = candidate.shape
    ys: list[npt.NDArray[np.intp]] = []
    xs: list[npt.NDArray[np.intp]] = []
    for edge, fixed, along_y in (
        (candidate[0], 0, False),
        (candidate[-1], h - 1, False),
        (candidate[:, 0], 0, True),
        (candidate[:, -1], w - 1, True),
    ):
        starts = np.flatnonzero(edge & ~np.concatenate([[False], edge[:-1]]))
        ys.append(starts if along_y else np.full(starts.size, fixed, dtype=np.intp))
        xs.append(np.full(starts.size, fixed, dtype=np.intp) if along_y else starts)
    labels, sizes = ops.seeded(candidate, np.concatenate(ys), np.concatenate(xs), connectivity=4)
    keep = sizes >= min_pixels
    keep[0] = False
    return ops.select(keep, labels) if keep.any() else None


def check_ct_range(
    array: npt.ArrayLike, padding: BoolArray | None = None, what: str = "input"
) -> None:
    """Refuse data that is evidently not CT in Hounsfield units.

    Catches the usual mistakes before they silently produce garbage: 8-bit display images
    (no air at -1000), raw attenuation or scaled data, and NaN/inf. Masks, thresholds and
    HU windows downstream all assume HU, so such data would give meaningless results
    rather than an error. The message says what was measured (the range holding 99% of
    the voxels and the pixel-to-pixel noise) and names the likely cause: a simulated
    low-dose volume whose noise of hundreds of HU spreads air far below -1000 HU is the
    common one after ``ipv2 simulate`` of an input that was low-dose already.
    """
    vol = np.asarray(array, dtype=np.float32)
    if not np.isfinite(vol).all():
        bad = int((~np.isfinite(vol)).sum())
        raise InputError(f"{what} contains {bad} NaN or infinite voxels; CT in HU must be finite")
    keep = ~padding if padding is not None and padding.shape == vol.shape else None
    body = vol[keep] if keep is not None else vol.ravel()
    if body.size == 0:
        raise InputError(f"{what} holds nothing but scanner padding")
    low, high = np.percentile(body, [0.5, 99.5])
    found = f"99% of its voxels lie in [{low:.0f}, {high:.0f}]"
    if low > -500.0:
        raise InputError(
            f"{what} does not look like CT in HU: {found}, so its darkest voxels are far "
            "above air (-1000 HU in every chest CT). If it is an 8-bit image, read it "
            "through the PNG dataset layout with its HU window; if it is raw stored values, "
            "apply the rescale slope and intercept first"
        )
    if low < -1600.0 or high > 6000.0:
        noise = pixel_noise_hu(vol, keep)
        measured = f"{found} and its pixel-to-pixel noise is about {noise:.0f} HU"
        if noise > _EXTREME_NOISE_HU and high <= 6000.0:
            raise InputError(
                f"{what} does not look like usable CT in HU: {measured} (normal-dose CT: "
                "10 to 30 HU; air cannot lie below -1000 HU). Noise this strong spreads air "
                "and tissue far outside the HU range, so lung masks and HU windows would be "
                "meaningless. If it is a simulated low-dose volume, its dose was too low for "
                "this input (often an input that was low-dose already): simulate from a "
                "normal-dose series, raise --dose, or fit the dose with --match-uldct or "
                "--match-noise"
            )
        raise InputError(
            f"{what} does not look like CT in HU: {measured}, outside the range of air "
            "(-1000) to dense bone and metal. Check the units and the rescale "
            "slope/intercept"
        )


_EXTREME_NOISE_HU = 150.0
"""Pixel noise above which a CT-range failure is put down to noise (a 2% simulation of a
normal-dose chest measures about 130 HU in its noise index; real uLDCT rarely exceeds
100 HU)."""


def pixel_noise_hu(vol: npt.NDArray[np.float32], keep: BoolArray | None = None) -> float:
    """Robust noise std (HU) from horizontal neighbour differences: 1.4826 MAD / sqrt(2).

    Neighbouring pixels share the anatomy and differ mostly by noise, and the median
    ignores the few pairs that straddle an edge. Up to 16 slices, evenly spread, are read.
    """
    vol3 = vol.reshape((-1, *vol.shape[-2:]))
    picks = np.unique(np.linspace(0, vol3.shape[0] - 1, 16).round().astype(int))
    diff = np.diff(vol3[picks], axis=-1)
    if keep is not None:
        kept = keep.reshape(vol3.shape)[picks]
        diff = diff[kept[..., 1:] & kept[..., :-1]]
    if diff.size == 0:
        return float("nan")
    centre = float(np.median(diff))
    return float(1.4826 * np.median(np.abs(diff - centre)) / np.sqrt(2.0))
