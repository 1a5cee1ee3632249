"""The masks of a block of slices: what :mod:`ipv2.purification.masks` runs on each block.

A block is a few consecutive slices of one image, processed as one tall image
(:class:`ipv2.purification.slice_block.SliceBlock`) so that each binary operation is one library call
for all of them; the results are exactly those of each slice on its own. The rules are
described in :mod:`ipv2.purification.masks`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from ipv2.core.binary_ops import BinaryOps
from ipv2.purification.slice_block import SliceBlock

if TYPE_CHECKING:
    from ipv2.purification.mask_options import MaskOptions

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]

_OTSU_BINS = 1536  # 4 HU bins over the fixed range below
_OTSU_LOW_HU, _OTSU_HIGH_HU = -2048.0, 4096.0
OTSU_SAMPLES_PER_SLICE = 16384
_COARSE_PIXELS = 128  # the body outline is found on a grid of about this size
_SQUARE = np.ones((3, 3), dtype=bool)


def block_otsu(
    vol: FloatArray, pad: BoolArray | None = None, samples: int = OTSU_SAMPLES_PER_SLICE
) -> npt.NDArray[np.float64]:
    """Otsu threshold of each slice's anatomy (padding excluded); -inf if nothing to split.

    Each slice's histogram is built from a regular subsample (about ``samples`` pixels: a
    512 x 512 slice is sampled every 4th pixel in each direction) with 4 HU bins on a
    fixed range, not the slices' own range, so the threshold of a slice never depends on
    which other slices are processed with it. One ``bincount`` builds the histograms of
    all the slices; scikit-image's Otsu then runs on each. A slice with fewer than two
    distinct levels gets -inf (no dark pixels), so a blank slice is not an error.
    """
    k, h, w = vol.shape
    step = max(1, int(np.sqrt(h * w / max(samples, 1))))
    lo, width = _OTSU_LOW_HU, (_OTSU_HIGH_HU - _OTSU_LOW_HU) / _OTSU_BINS
    # Out-of-range HU (metal, say) is clipped into the edge bins; the bin width is a
    # power of two, so multiplying by its inverse is exact.
    scaled = np.clip(vol[:, ::step, ::step], lo, _OTSU_HIGH_HU - width) - np.float32(lo)
    scaled *= np.float32(1.0 / width)
    index = scaled.astype(np.intp)
    index += (np.arange(k, dtype=np.intp) * _OTSU_BINS)[:, None, None]
    wanted = index if pad is None else index[~pad[:, ::step, ::step]]
    counts = np.bincount(wanted.ravel(), minlength=k * _OTSU_BINS).reshape(k, _OTSU_BINS)
    out = np.full(k, -np.inf)
    for i in range(k):
        used = np.flatnonzero(counts[i])
        if used.size < 2:
            continue
        first, last = used[0], used[-1] + 1
        centres = lo + (np.arange(first, last) + 0.5) * width
        out[i] = float(threshold_otsu(hist=(counts[i, first:last], centres)))
    return out


@functools.lru_cache(maxsize=16)
def _disk(radius: int) -> BoolArray:
    """The opening's footprint (cached: the preview asks for it on every slider move)."""
    footprint = disk(radius).astype(bool)
    footprint.flags.writeable = False
    return footprint


def block_dark(
    vol: FloatArray, pad: BoolArray | None, opts: MaskOptions, *, ops: BinaryOps
) -> tuple[SliceBlock, npt.NDArray[np.float64]]:
    """``dark`` of every slice of a block, and the thresholds used.

    Dark = at or below the slice's threshold, or padding, then one opening. The erosion
    treats the outside of the image as dark so that air reaching the border, and pixel
    (0, 0) in particular, survives the opening; the reference flood fill and the corner
    fill both start there. The block comes back with unset spacer rows, ready to label.
    """
    k, h, w = vol.shape
    if opts.threshold_hu is not None:
        thresholds = np.full(k, float(opts.threshold_hu))
    else:
        thresholds = block_otsu(vol, pad)
    r = int(opts.opening_radius)
    block = SliceBlock(k, h, w, gap=max(1, r))
    np.less_equal(vol, thresholds.astype(np.float32)[:, None, None], out=block.slices)
    if pad is not None:
        block.slices[...] |= pad
    if r > 0:
        block.set_gaps(True)
        block.replace(ops.erode(block.image, _disk(r)))
        block.set_gaps(False)
        block.replace(ops.dilate(block.image, _disk(r)))
        block.set_gaps(False)
        if pad is not None:
            block.slices[...] |= pad
    return block, thresholds


def coarse_bodies(coarse_dark: BoolArray, ops: BinaryOps) -> SliceBlock:
    """The body of each slice on a coarse grid: largest bright component, holes filled.

    The grid takes the centre pixel of each ``f x f`` block (``f`` so that it is about
    128 pixels wide). Only the body's extent is needed, to tell air inside it (lungs,
    airways) from air outside it (under the table, beyond the field of view), and the
    coarse grid makes its labelling 16 times cheaper at 512 pixels. If several
    components tie for largest, the one met first in raster order is kept, whatever
    order the labelling numbered them in.
    """
    k, hc, wc = coarse_dark.shape
    block = SliceBlock(k, hc, wc)
    np.logical_not(coarse_dark, out=block.slices)
    tall, count = ops.label(block.image, 8)
    sizes = np.bincount(tall.ravel(), minlength=count + 1)
    sizes[0] = 0
    slice_of = np.zeros(count + 1, dtype=np.intp)
    slice_of[block.adopt(tall)] = np.arange(k)[:, None, None]
    largest = np.zeros(k, dtype=sizes.dtype)
    np.maximum.at(largest, slice_of, sizes)
    keep = (sizes > 0) & (sizes == largest[slice_of])
    if np.count_nonzero(keep) > np.count_nonzero(largest):  # a slice has a tie
        keep = _first_of_ties(keep, slice_of, tall)
    body = SliceBlock.like(block, ops.select(keep, tall))
    # Unset spacer rows make each slice's top and bottom rows border for the fill, as
    # they are in the slice alone.
    return SliceBlock.like(block, ops.fill_holes(body.image))


def _first_of_ties(
    keep: BoolArray, slice_of: npt.NDArray[np.intp], tall: npt.NDArray[np.integer]
) -> BoolArray:
    """Of each slice's flagged components, only the one whose first pixel comes first.

    The tall image holds the slices in order, so its raster order is each slice's.
    Ties are rare outside tiny images, so a scan per tied component costs nothing.
    """
    flat = tall.ravel()
    best: dict[int, tuple[int, int]] = {}
    for label in np.flatnonzero(keep).tolist():
        start = int(np.argmax(flat == label))
        z = int(slice_of[label])
        if z not in best or start < best[z][0]:
            best[z] = (start, label)
    out = np.zeros_like(keep)
    out[[label for _, label in best.values()]] = True
    return out


def _coarse_grid(h: int, w: int) -> tuple[int, int, int]:
    """Block size ``f`` and coarse shape of an ``h x w`` slice."""
    f = max(1, min(h, w) // _COARSE_PIXELS)
    return f, h // f, w // f


def _mostly_outside_components(
    enclosed: SliceBlock, body_c: BoolArray, opts: MaskOptions, *, ops: BinaryOps
) -> BoolArray:
    """The components of ``enclosed`` whose sampled pixels lie mostly outside the body.

    One pixel per coarse block (its centre) is sampled. Only a component with a sampled
    pixel outside the coarse body can be mostly outside it, so those pixels are the seeds
    and no other component is ever labelled; components too small to be sampled are left
    as they are (enclosed air pockets too small to matter here).
    """
    k, h, w = enclosed.k, enclosed.h, enclosed.w
    _, hc, wc = body_c.shape
    f, g = h // hc, w // wc
    sampled = enclosed.slices[:, f // 2 :: f, g // 2 :: g][:, :hc, :wc]
    zs, ys, xs = np.nonzero(sampled & ~body_c)
    if zs.size == 0:
        return np.zeros((k, h, w), dtype=bool)
    rows = enclosed.rows(zs, f // 2 + ys * f)
    cols = g // 2 + xs * g
    tall_labels, sizes = ops.seeded(enclosed.image, rows, cols, connectivity=opts.connectivity)
    count = sizes.size - 1
    labels = enclosed.adopt(tall_labels)
    at = labels[:, f // 2 :: f, g // 2 :: g][:, :hc, :wc]
    total = np.bincount(at.ravel(), minlength=count + 1)
    inside = np.bincount(at[body_c], minlength=count + 1)
    outside = (total > 0) & (2 * inside < total)
    outside[0] = False
    return np.asarray(enclosed.adopt(ops.select(outside, tall_labels)))


def fill_from(
    block: SliceBlock,
    zs: npt.NDArray[np.intp],
    ys: npt.NDArray[np.intp],
    *,
    xs: npt.NDArray[np.intp],
    connectivity: int,
    ops: BinaryOps,
    out: BoolArray,
) -> None:
    """Into ``out``, the components of the block's slices that hold a seed: pixel
    ``(ys[i], xs[i])`` of slice ``zs[i]`` (the paper's and the script's flood fills)."""
    labels, _ = ops.seeded(block.image, block.rows(zs, ys), xs, connectivity=connectivity)
    np.greater(block.adopt(labels), 0, out=out)


def _full_body(
    dark: BoolArray, coarse: SliceBlock, lung: BoolArray, *, ops: BinaryOps, out: BoolArray
) -> None:
    """Full-resolution body into ``out``: bright pixels near the coarse body, plus lungs."""
    k, h, w = dark.shape
    body_c = coarse.slices
    _, hc, wc = body_c.shape
    f, g = h // hc, w // wc
    if f == 1 and g == 1:
        np.logical_or(body_c & ~dark, lung, out=out)
        return
    # The grown coarse body is repeated along x only; broadcasting over the f rows of each
    # coarse block does the rest without building a full-size copy of it.
    rows = np.zeros((k, hc, w), dtype=bool)
    rows[:, :, : wc * g] = coarse.adopt(ops.dilate(coarse.image, _SQUARE)).repeat(g, axis=2)
    near = np.zeros((k, h, w), dtype=bool)
    top = near[:, : hc * f].reshape(k, hc, f, w)
    np.greater(rows[:, :, None, :], dark[:, : hc * f].reshape(k, hc, f, w), out=top)
    np.logical_or(near, lung, out=out)


def block_regions(
    vol: FloatArray,
    pad: BoolArray | None,
    opts: MaskOptions,
    *,
    ops: BinaryOps,
    dark_out: BoolArray,
    background: BoolArray,
) -> tuple[npt.NDArray[np.float64], BoolArray, BoolArray]:
    """Dark mask and background of a block's slices, written into ``dark_out`` and
    ``background``; returns the thresholds, the lung (dark minus background) and the
    body.

    Background = padding plus the dark components that hold an image corner; with the
    default ``outside-body`` rule also those touching the image border or lying mostly
    outside the body (air under the table, air separated by the field-of-view circle).
    """
    block, thresholds = block_dark(vol, pad, opts, ops=ops)
    dark = block.slices
    dark_out[...] = dark
    f, hc, wc = _coarse_grid(*dark.shape[1:])
    coarse_dark = dark[:, f // 2 : hc * f : f, f // 2 : wc * f : f] if f > 1 else dark
    coarse = coarse_bodies(coarse_dark, ops)
    body_c = coarse.slices
    if opts.background_rule == "outside-body":
        # Set spacer rows join each slice's top and bottom rows to the border, as they are.
        block.set_gaps(True)
        border = SliceBlock.like(block, ops.border_connected(block.image, opts.connectivity))
        block.set_gaps(False)
        enclosed = SliceBlock.like(block, block.image & ~border.image)
        outside = _mostly_outside_components(enclosed, body_c, opts, ops=ops)
        np.logical_or(border.slices, outside, out=background)
    else:
        corner_y = np.array([0, 0, block.h - 1, block.h - 1])
        corner_x = np.array([0, block.w - 1, 0, block.w - 1])
        zs, cs = np.nonzero(dark[:, corner_y, corner_x])
        fill_from(
            block,
            zs,
            corner_y[cs],
            xs=corner_x[cs],
            connectivity=opts.connectivity,
            ops=ops,
            out=background,
        )
    if pad is not None:
        background |= pad
    lung = dark & ~background
    body = np.empty(dark.shape, dtype=bool)
    _full_body(dark, coarse, lung, ops=ops, out=body)
    return thresholds, lung, body
