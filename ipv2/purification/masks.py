"""Purification masks: dark regions, background and the lung mask ``L`` (method.md 1 and 3).

Every function takes a stack of axial slices ``(z, y, x)`` and treats the slices
independently: structuring elements and connectivity never reach across ``z``, so a
one-slice preview gives exactly the masks of a whole-volume run. For speed the stack is
cut into blocks of a few slices; each block is one tall image for the binary operations
(:mod:`ipv2.purification.slice_block`), and the blocks run on a thread pool (:mod:`ipv2.core.thread_pool`).
The binary operations come from OpenCV, or from scipy where OpenCV is missing
(:mod:`ipv2.core.binary_ops`; same results). A 2D slice is accepted and treated as a stack of
one, which is what the Slicer preview calls on every slider move.

- ``dark``: pixels at or below the slice's Otsu threshold, then one binary opening with a
  disk. Scanner padding is kept out of the Otsu histogram (it would drag the threshold
  towards -3024 HU) and counted as dark, because it is background.
- background: the dark components reachable from the four corners (the paper's flood
  fill). By default also every dark component that touches the image border or lies
  outside the body (air under the table, air cut off by the field-of-view circle), which
  the corner fill alone leaves inside ``L``. The body is the largest bright component
  (the first in raster order if several tie) with its holes filled, found on a coarse
  grid because only its extent is needed.
- ``L``: ``paper`` variant (default) = ``dark(U) - bg(U)`` OR ``dark(N) - bg(N)``;
  ``reference`` variant = the authors' script: ``dark(U) | dark(N)`` minus one flood fill
  from pixel (0, 0), which removes nothing when that pixel is bright.
- ``anatomical`` variant (ours, not the paper's; :mod:`ipv2.purification.anatomical`):
  the one exception to slice independence. Lungs are the dark components inside the
  patient's body that are connected in 3D to the largest thoracic air, so bowel gas, gas
  under the back and air in the table are not lung; the body excludes the table; the
  opening radius follows each slice's noise. A single slice uses a 2D fallback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ipv2.core.binary_ops import BinaryOps, backend
from ipv2.core.errors import InputError
from ipv2.core.padding import slice_padding
from ipv2.core.thread_pool import map_slices, worker_count
from ipv2.purification.anatomical import anatomical_regions
from ipv2.purification.mask_blocks import (
    OTSU_SAMPLES_PER_SLICE,
    block_dark,
    block_otsu,
    block_regions,
    fill_from,
)
from ipv2.purification.mask_options import MaskOptions
from ipv2.purification.slice_block import SliceBlock

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]
_MAX_BLOCK = 8  # slices per block: enough to amortise call overhead, few enough to balance


@dataclass(frozen=True)
class DarkMask:
    """``dark(I)`` for a stack, with the threshold used on each slice."""

    mask: BoolArray
    thresholds: npt.NDArray[np.float64]  # -inf where a slice had nothing to threshold


@dataclass(frozen=True)
class ImageRegions:
    """One image's own regions: dark and background (lung = dark - background).

    The ``anatomical`` variant gives its lung explicitly (``kept``): there dark pixels
    inside the body that are not lung (bowel gas, gas under the back) are neither lung
    nor background.
    """

    dark: DarkMask
    background: BoolArray
    kept: BoolArray | None = None

    @property
    def lung(self) -> BoolArray:
        if self.kept is not None:
            return self.kept
        return np.asarray(self.dark.mask & ~self.background)


@dataclass(frozen=True)
class MaskSet:
    """The masks purification needs for one pair (U, N) on U's grid.

    ``common`` and the paper variant's ``background`` follow from the two images'
    regions and are computed on first use: purification needs only one of ``common``
    (IPv1) and ``L`` (Module 1), and not storing what is not asked for keeps the masks of
    a large volume cheaper in time and memory.
    """

    options: MaskOptions
    u: ImageRegions
    n: ImageRegions
    lung: BoolArray  # L: Module 1's region
    body: BoolArray  # body in either image, lung included
    removed: BoolArray | None = None  # reference variant: what the flood fill removed

    @functools.cached_property
    def common(self) -> BoolArray:
        """``dark(U) | dark(N)``: IPv1's region."""
        return np.asarray(self.u.dark.mask | self.n.dark.mask)

    @functools.cached_property
    def background(self) -> BoolArray:
        """Background in both images (reference variant: what the fill removed)."""
        if self.removed is not None:
            return self.removed
        return np.asarray(self.u.background & self.n.background)

    @functools.cached_property
    def outline_band(self) -> BoolArray:
        """Background in exactly one of the two images: where the body outline moved.

        U and N are separate scans (another breathing phase, a shifted patient), so the
        body outline differs by a few pixels. There one image shows air and the other
        tissue; a training pair that takes the input from U and the label from N there
        teaches the network to erase (or grow) the outer rim of the body (issue 14: a dark
        rim and a -31 HU body bias on the phantom). Module 1 fuses this band like the
        lungs, so input and label follow N's outline there. Empty for the reference
        variant, which reproduces the published script (its fill removes the union).
        """
        if self.removed is not None:
            return np.zeros_like(self.removed)
        return np.asarray(self.u.background ^ self.n.background)

    def label_map(self) -> npt.NDArray[np.uint8]:
        """0 background (and anything outside the body, e.g. the table), 1 body, 2 lung."""
        out = self.body.astype(np.uint8)
        out[self.lung] = 2
        return out

    def lung_fraction(self) -> list[float]:
        return [float(v) for v in self.lung.mean(axis=(1, 2))]

    def background_fraction(self) -> list[float]:
        return [float(v) for v in self.background.mean(axis=(1, 2))]


def as_stack(array: npt.ArrayLike, what: str = "image") -> FloatArray:
    """A float32 (z, y, x) view of a slice or volume; empty input is refused.

    Finiteness is checked block by block where the slices are processed (the error names
    the slice), so the check reads each block while it is about to be used anyway.
    """
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"{what} must be a 2D slice or a 3D stack, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{what} is empty (shape {arr.shape})")
    return arr


def _padding_stack(vol: FloatArray, padding: npt.ArrayLike | None) -> BoolArray | None:
    if padding is None:
        return None
    pad = np.asarray(padding, dtype=bool)
    if pad.ndim == 2:
        pad = pad[np.newaxis]
    if pad.shape != vol.shape:
        raise InputError(f"padding mask shape {pad.shape} does not match the image {vol.shape}")
    return pad


def otsu_thresholds(
    array: npt.ArrayLike, padding: BoolArray | None = None, samples: int = OTSU_SAMPLES_PER_SLICE
) -> npt.NDArray[np.float64]:
    """Per-slice Otsu threshold of the anatomy of a slice or stack (see :func:`block_otsu`)."""
    vol = as_stack(array)
    pad = _padding_stack(vol, padding)
    out = np.empty(vol.shape[0], dtype=np.float64)

    def work(a: int, b: int) -> None:
        _check_finite_block(vol[a:b], "image", a)
        out[a:b] = block_otsu(vol[a:b], None if pad is None else pad[a:b], samples)

    _run_blocks(vol.shape[0], work)
    return out


def _blocks(z: int) -> list[tuple[int, int]]:
    """Slice ranges of at most ``_MAX_BLOCK``, at least two per worker when there are enough."""
    size = max(1, min(_MAX_BLOCK, -(-z // (2 * worker_count()))))
    return [(k, min(z, k + size)) for k in range(0, z, size)]


def _check_finite_block(vol: FloatArray, what: str, first: int) -> None:
    """Masks need finite HU: NaN or infinity is an error naming the first bad slice."""
    if np.isfinite(vol).all():
        return
    bad = ~np.isfinite(vol)
    k = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
    raise InputError(
        f"{what} contains {int(bad[k].sum())} NaN or infinite pixels on slice {first + k}; "
        "masks need finite HU"
    )


def _block_padding(
    vol: FloatArray, pad: BoolArray | None, first: int, *, detect: bool, ops: BinaryOps
) -> BoolArray | None:
    """The block's padding: given (a slice of ``pad``), detected, or None when it has none."""
    if pad is not None:
        block = pad[first : first + vol.shape[0]]
        return block if block.any() else None
    if not detect:
        return None
    found = [slice_padding(sl, ops) for sl in vol]
    if all(f is None for f in found):
        return None
    out = np.zeros(vol.shape, dtype=bool)
    for k, f in enumerate(found):
        if f is not None:
            out[k] = f
    return out


class _RegionStacks:
    """Preallocated stacks one image's regions are written into, block by block."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.dark = np.empty(shape, dtype=bool)
        self.background = np.empty(shape, dtype=bool)
        self.thresholds = np.empty(shape[0], dtype=np.float64)

    def compute(
        self,
        vol: FloatArray,
        pad: BoolArray | None,
        first: int,
        *,
        opts: MaskOptions,
        ops: BinaryOps,
    ) -> tuple[BoolArray, BoolArray]:
        """Fill slices ``first``... from a block; returns the block's lung and body."""
        end = first + vol.shape[0]
        self.thresholds[first:end], lung, body = block_regions(
            vol,
            pad,
            opts,
            ops=ops,
            dark_out=self.dark[first:end],
            background=self.background[first:end],
        )
        return lung, body

    def result(self) -> ImageRegions:
        return ImageRegions(dark=DarkMask(self.dark, self.thresholds), background=self.background)


def _run_blocks(z: int, work: Callable[[int, int], None]) -> None:
    spans = _blocks(z)
    map_slices(lambda i: work(*spans[i]), len(spans))


def dark_mask(
    array: npt.ArrayLike,
    padding: BoolArray | None = None,
    options: MaskOptions | None = None,
    *,
    mask_backend: str | None = None,
) -> DarkMask:
    """``dark(I)`` for every slice: at or below the Otsu threshold (or the override),
    then one opening."""
    opts = options or MaskOptions()
    ops = backend(mask_backend)
    vol = as_stack(array)
    pad = _padding_stack(vol, padding)
    mask = np.empty(vol.shape, dtype=bool)
    thresholds = np.empty(vol.shape[0], dtype=np.float64)

    def work(a: int, b: int) -> None:
        _check_finite_block(vol[a:b], "image", a)
        block, thresholds[a:b] = block_dark(
            vol[a:b], _block_padding(vol[a:b], pad, a, detect=False, ops=ops), opts, ops=ops
        )
        mask[a:b] = block.slices

    _run_blocks(vol.shape[0], work)
    return DarkMask(mask=mask, thresholds=thresholds)


def purification_masks(
    u: npt.ArrayLike,
    n: npt.ArrayLike,
    options: MaskOptions | None = None,
    *,
    padding_u: BoolArray | None = None,
    padding_n: BoolArray | None = None,
    detect: bool = True,
    mask_backend: str | None = None,
) -> MaskSet:
    """All masks for the pair (U, N): ``common``, ``L``, background and body.

    ``U`` and ``N`` must be on the same grid. Padding is detected on each slice unless
    given (``detect=False`` skips detection when the caller knows there is none).
    ``mask_backend`` picks the binary operations (``"opencv"``, ``"scipy"``; default:
    OpenCV when installed); the masks are the same either way.
    """
    opts = options or MaskOptions()
    ops = backend(mask_backend)
    uu, nn = as_stack(u, "U (low-dose image)"), as_stack(n, "N (normal-dose image)")
    if uu.shape != nn.shape:
        raise InputError(f"U and N differ in shape: {uu.shape} vs {nn.shape}")
    pad_u, pad_n = _padding_stack(uu, padding_u), _padding_stack(nn, padding_n)
    if opts.variant == "anatomical":
        return _anatomical_masks((uu, pad_u), (nn, pad_n), opts, detect=detect, ops=ops)
    ru, rn = _RegionStacks(uu.shape), _RegionStacks(uu.shape)
    lung = np.empty(uu.shape, dtype=bool)
    body = np.empty(uu.shape, dtype=bool)
    removed = np.empty(uu.shape, dtype=bool) if opts.variant == "reference" else None

    def work(a: int, b: int) -> None:
        (lung_u, body_u), (lung_n, body_n) = (
            one_image(vol, pad, what, out=out, a=a, b=b)
            for vol, pad, what, out in ((uu, pad_u, "U", ru), (nn, pad_n, "N", rn))
        )
        if removed is None:
            np.logical_or(lung_u, lung_n, out=lung[a:b])
            np.logical_or(body_u, body_n, out=body[a:b])
            return
        # The published script: one flood fill of common(U, N) from pixel (0, 0).
        block = SliceBlock(b - a, uu.shape[1], uu.shape[2])
        common = block.slices
        np.logical_or(ru.dark[a:b], rn.dark[a:b], out=common)
        zs = np.flatnonzero(common[:, 0, 0])
        origin = np.zeros_like(zs)
        gone = removed[a:b]
        fill_from(block, zs, origin, xs=origin, connectivity=opts.connectivity, ops=ops, out=gone)
        np.logical_and(common, ~gone, out=lung[a:b])
        body[a:b] = (body_u | body_n | lung[a:b]) & ~gone

    def one_image(
        vol: FloatArray, pad: BoolArray | None, what: str, *, out: _RegionStacks, a: int, b: int
    ) -> tuple[BoolArray, BoolArray]:
        _check_finite_block(vol[a:b], what, a)
        found = _block_padding(vol[a:b], pad, a, detect=detect, ops=ops)
        return out.compute(vol[a:b], found, a, opts=opts, ops=ops)

    _run_blocks(uu.shape[0], work)
    return MaskSet(
        options=opts, u=ru.result(), n=rn.result(), lung=lung, body=body, removed=removed
    )


def _anatomical_masks(
    u: tuple[FloatArray, BoolArray | None],
    n: tuple[FloatArray, BoolArray | None],
    opts: MaskOptions,
    *,
    detect: bool,
    ops: BinaryOps,
) -> MaskSet:
    """The ``anatomical`` variant: each image's regions on the whole stack (3D), OR-ed.

    Background is what is dark outside the patient; the body is the patient alone.
    """
    regions = []
    for (vol, pad), what in ((u, "U"), (n, "N")):
        _check_finite_block(vol, what, 0)
        found = _block_padding(vol, pad, 0, detect=detect, ops=ops)
        r = anatomical_regions(vol, found, opts, ops=ops)
        background = r.dark & ~r.body
        regions.append((ImageRegions(DarkMask(r.dark, r.thresholds), background, r.lung), r.body))
    (ru, body_u), (rn, body_n) = regions
    lung = ru.lung | rn.lung
    return MaskSet(options=opts, u=ru, n=rn, lung=lung, body=body_u | body_n | lung)
