"""Purification masks: dark regions, background and the lung mask ``L`` (method.md 1 and 3).

Everything works on a stack of axial slices ``(z, y, x)`` at once: the slices are
independent (structuring elements and connectivity never reach across ``z``), but one
call into scipy per operation over the whole stack is several times faster than a Python
loop over slices. A 2D slice is accepted and treated as a stack of one, which is what the
Slicer preview calls on every slider move.

- ``dark``: pixels at or below the slice's Otsu threshold, then one binary opening with a
  disk. Scanner padding is kept out of the Otsu histogram (it would drag the threshold
  towards -3024 HU) and counted as dark, because it is background.
- background: the dark components reachable from the four corners (the paper's flood
  fill). By default also every dark component that touches the image border or lies
  outside the body (air under the table, air cut off by the field-of-view circle), which
  the corner fill alone leaves inside ``L``. The body is the largest bright component
  with its holes filled, found on a coarse grid because only its extent is needed.
- ``L``: ``paper`` variant (default) = ``dark(U) - bg(U)`` OR ``dark(N) - bg(N)``;
  ``reference`` variant = the authors' script: ``dark(U) | dark(N)`` minus one flood fill
  from pixel (0, 0), which removes nothing when that pixel is bright.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from ipv2.errors import InputError
from ipv2.padding import detect_padding

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]
Variant = Literal["paper", "reference"]
BackgroundRule = Literal["outside-body", "corners"]

VARIANTS: tuple[str, ...] = ("paper", "reference")
BACKGROUND_RULES: tuple[str, ...] = ("outside-body", "corners")
_OTSU_BINS = 1536  # 4 HU bins over the fixed range below
_OTSU_LOW_HU, _OTSU_HIGH_HU = -2048.0, 4096.0
_OTSU_SAMPLES_PER_SLICE = 16384
_COARSE_PIXELS = 128  # the body outline is found on a grid of about this size


@dataclass(frozen=True)
class MaskOptions:
    """How the masks are made; every field is recorded in reports and manifests."""

    variant: Variant = "paper"
    threshold_hu: float | None = None  # fixed HU threshold instead of Otsu
    opening_radius: int = 1  # 1 = the paper's 3x3 disk; 0 = no opening
    connectivity: int = 4  # flood-fill connectivity in the slice plane: 4 or 8
    background_rule: BackgroundRule = "outside-body"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"mask variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.background_rule not in BACKGROUND_RULES:
            raise InputError(
                f"background rule must be one of {BACKGROUND_RULES}, got {self.background_rule!r}"
            )
        if self.connectivity not in (4, 8):
            raise InputError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if not 0 <= int(self.opening_radius) <= 10:
            raise InputError(f"opening radius must be 0..10 pixels, got {self.opening_radius}")
        if self.threshold_hu is not None and not np.isfinite(self.threshold_hu):
            raise InputError(f"threshold must be a finite HU value, got {self.threshold_hu}")

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DarkMask:
    """``dark(I)`` for a stack, with the threshold used on each slice."""

    mask: BoolArray
    thresholds: npt.NDArray[np.float64]  # -inf where a slice had nothing to threshold


@dataclass(frozen=True)
class ImageRegions:
    """One image's own regions: dark, background and body (lung = dark - background)."""

    dark: DarkMask
    background: BoolArray
    body: BoolArray

    @property
    def lung(self) -> BoolArray:
        return np.asarray(self.dark.mask & ~self.background)


@dataclass(frozen=True)
class MaskSet:
    """The masks purification needs for one pair (U, N) on U's grid."""

    options: MaskOptions
    u: ImageRegions
    n: ImageRegions
    common: BoolArray  # dark(U) | dark(N): IPv1's region
    lung: BoolArray  # L: Module 1's region
    background: BoolArray  # background in both images (reference: what the fill removed)
    body: BoolArray  # body in either image, lung included

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
    """A float32 (z, y, x) view of a slice or volume; NaN and empty input are refused."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"{what} must be a 2D slice or a 3D stack, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{what} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{what} contains {bad} NaN or infinite pixels; masks need finite HU")
    return arr


def _slice_structure(connectivity: int) -> BoolArray:
    """A 3D structure that connects pixels within a slice only (4- or 8-neighbours)."""
    plane = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = np.zeros((3, 3, 3), dtype=bool)
    out[1] = plane
    return out


def otsu_thresholds(
    array: npt.ArrayLike, padding: BoolArray | None = None, samples: int = _OTSU_SAMPLES_PER_SLICE
) -> npt.NDArray[np.float64]:
    """Per-slice Otsu threshold of the anatomy (padding excluded).

    The histograms of all slices are built in one ``bincount`` over a regular subsample
    (about ``samples`` pixels per slice: a 512 x 512 slice is sampled every 4th pixel in
    each direction), with 4 HU bins over a fixed range; scikit-image's Otsu then
    runs on each slice's histogram. A slice with fewer than two distinct levels gets
    -inf (no dark pixels), so a blank slice is not an error.
    """
    vol = as_stack(array)
    z, h, w = vol.shape
    step = max(1, int(np.sqrt(h * w / max(samples, 1))))
    sub = vol[:, ::step, ::step]
    valid = np.ones(sub.shape, dtype=bool)
    if padding is not None:
        valid = ~np.asarray(padding, dtype=bool).reshape(vol.shape)[:, ::step, ::step]
    out = np.full(z, -np.inf)
    if not valid.any():
        return out
    # A fixed HU grid (not the stack's own range) keeps each slice's threshold independent
    # of which other slices are processed with it: a one-slice live preview and a
    # whole-volume run give the same masks.
    lo, width = _OTSU_LOW_HU, (_OTSU_HIGH_HU - _OTSU_LOW_HU) / _OTSU_BINS
    idx = np.clip(((sub - lo) / width).astype(np.int64), 0, _OTSU_BINS - 1)
    idx += np.arange(z, dtype=np.int64)[:, None, None] * _OTSU_BINS
    counts = np.bincount(idx[valid], minlength=z * _OTSU_BINS).reshape(z, _OTSU_BINS)
    centres = lo + (np.arange(_OTSU_BINS) + 0.5) * width
    for k in range(z):
        used = np.flatnonzero(counts[k])
        if used.size < 2:
            continue
        first, last = used[0], used[-1] + 1
        out[k] = float(threshold_otsu(hist=(counts[k, first:last], centres[first:last])))
    return out


def dark_mask(
    array: npt.ArrayLike, padding: BoolArray | None = None, options: MaskOptions | None = None
) -> DarkMask:
    """``dark(I)``: at or below the Otsu threshold (or the override), then one opening.

    The erosion treats the outside of the image as dark so that air reaching the border,
    and pixel (0, 0) in particular, survives the opening; the reference flood fill and
    the corner fill both start there.
    """
    opts = options or MaskOptions()
    vol = as_stack(array)
    pad = _padding(vol, padding)
    if opts.threshold_hu is not None:
        thresholds = np.full(vol.shape[0], float(opts.threshold_hu))
    else:
        thresholds = otsu_thresholds(vol, pad)
    dark = vol <= thresholds.astype(np.float32)[:, None, None]
    if pad is not None:
        dark |= pad
    r = int(opts.opening_radius)
    if r > 0:
        footprint = disk(r).astype(bool)[np.newaxis]
        dark = ndimage.binary_erosion(dark, footprint, border_value=1)
        dark = ndimage.binary_dilation(dark, footprint)
        if pad is not None:
            dark |= pad
    return DarkMask(mask=np.asarray(dark, dtype=bool), thresholds=thresholds)


def _padding(vol: FloatArray, padding: BoolArray | None) -> BoolArray | None:
    if padding is None:
        return None
    pad = np.asarray(padding, dtype=bool)
    if pad.ndim == 2:
        pad = pad[np.newaxis]
    if pad.shape != vol.shape:
        raise InputError(f"padding mask shape {pad.shape} does not match the image {vol.shape}")
    return pad if pad.any() else None


def _label_first(labels: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """First label of each slice; labels never cross slices, so they are numbered by slice."""
    last = labels.reshape(labels.shape[0], -1).max(axis=1).astype(np.int64)
    return np.concatenate([[1], np.maximum.accumulate(last)[:-1] + 1])


def coarse_body(bright: BoolArray) -> BoolArray:
    """The body on a coarse grid: largest bright component per slice, holes filled.

    The grid takes the centre pixel of each ``f x f`` block (``f`` so that it is about
    128 pixels wide). Only the body's extent is needed, to tell air
    inside it (lungs, airways) from air outside it (under the table, beyond the field of
    view), and the coarse grid makes the two labellings 16 times cheaper at 512 pixels.
    """
    z, h, w = bright.shape
    f = max(1, min(h, w) // _COARSE_PIXELS)
    hc, wc = h // f, w // f
    coarse = bright[:, f // 2 : hc * f : f, f // 2 : wc * f : f] if f > 1 else bright
    labels, count = ndimage.label(coarse, _slice_structure(8))
    body = np.zeros_like(coarse)
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        first = _label_first(labels)
        for k in range(z):
            stop = int(first[k + 1]) if k + 1 < z else count + 1
            if stop > first[k]:
                body[k] = labels[k] == first[k] + int(np.argmax(sizes[first[k] : stop]))
    outside, _ = ndimage.label(~body, _slice_structure(4))
    edge = np.unique(
        np.concatenate(
            [
                outside[:, 0].ravel(),
                outside[:, -1].ravel(),
                outside[:, :, 0].ravel(),
                outside[:, :, -1].ravel(),
            ]
        )
    )
    holes = (outside > 0) & ~np.isin(outside, edge)
    body |= holes
    return np.asarray(body)


def image_regions(
    array: npt.ArrayLike, padding: BoolArray | None = None, options: MaskOptions | None = None
) -> ImageRegions:
    """Dark, background and body of one image (the paper's per-image background removal).

    Background = padding plus the dark components that hold an image corner; with the
    default ``outside-body`` rule also those touching the image border or lying mostly
    outside the body (air under the table, air separated by the field-of-view circle).
    """
    opts = options or MaskOptions()
    vol = as_stack(array)
    pad = _padding(vol, padding)
    dark = dark_mask(vol, pad, opts)
    labels, count = ndimage.label(dark.mask, _slice_structure(opts.connectivity))
    is_bg = np.zeros(count + 1, dtype=bool)
    is_bg[labels[:, [0, 0, -1, -1], [0, -1, 0, -1]].ravel()] = True
    bright = ~dark.mask
    body_c = coarse_body(bright)
    if opts.background_rule == "outside-body":
        edges = [
            labels[:, 0].ravel(),
            labels[:, -1].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
        is_bg[np.concatenate(edges)] = True
        is_bg |= _mostly_outside(labels, count, body_c)
    is_bg[0] = False
    background = is_bg[labels]
    if pad is not None:
        background |= pad
    body = _full_body(bright, body_c, dark.mask & ~background)
    return ImageRegions(dark=dark, background=background, body=body)


def _mostly_outside(labels: npt.NDArray[np.int32], count: int, body_c: BoolArray) -> BoolArray:
    """Components whose sampled pixels lie mostly outside the coarse body.

    One pixel per coarse block (its centre) is sampled; components too small to be
    sampled are left as they are (enclosed air pockets too small to matter here).
    """
    _, h, w = labels.shape
    f = h // body_c.shape[1]
    g = w // body_c.shape[2]
    sampled = labels[:, f // 2 :: f, g // 2 :: g][:, : body_c.shape[1], : body_c.shape[2]]
    total = np.bincount(sampled.ravel(), minlength=count + 1)
    inside = np.bincount(sampled[body_c], minlength=count + 1)
    return np.asarray((total > 0) & (2 * inside < total))


def _full_body(bright: BoolArray, body_c: BoolArray, lung: BoolArray) -> BoolArray:
    """Full-resolution body: bright pixels near the coarse body, plus the lungs."""
    z, h, w = bright.shape
    f = h // body_c.shape[1]
    g = w // body_c.shape[2]
    if f > 1 or g > 1:
        grown = ndimage.binary_dilation(body_c, _slice_structure(8))
        up = np.zeros((z, h, w), dtype=bool)
        up[:, : body_c.shape[1] * f, : body_c.shape[2] * g] = grown.repeat(f, axis=1).repeat(
            g, axis=2
        )
    else:
        up = body_c
    return np.asarray((bright & up) | lung)


def purification_masks(
    u: npt.ArrayLike,
    n: npt.ArrayLike,
    options: MaskOptions | None = None,
    padding_u: BoolArray | None = None,
    padding_n: BoolArray | None = None,
    detect: bool = True,
) -> MaskSet:
    """All masks for the pair (U, N): ``common``, ``L``, background and body.

    ``U`` and ``N`` must be on the same grid. Padding is detected on each image unless
    given (``detect=False`` skips detection when the caller knows there is none).
    """
    opts = options or MaskOptions()
    uu, nn = as_stack(u, "U (low-dose image)"), as_stack(n, "N (normal-dose image)")
    if uu.shape != nn.shape:
        raise InputError(f"U and N differ in shape: {uu.shape} vs {nn.shape}")
    if padding_u is None and detect:
        padding_u = detect_padding(uu).mask
    if padding_n is None and detect:
        padding_n = detect_padding(nn).mask
    ru, rn = image_regions(uu, padding_u, opts), image_regions(nn, padding_n, opts)
    common = ru.dark.mask | rn.dark.mask
    if opts.variant == "paper":
        lung = ru.lung | rn.lung
        background = ru.background & rn.background
        body = ru.body | rn.body
    else:
        labels, _ = ndimage.label(common, _slice_structure(opts.connectivity))
        seed = labels[:, 0, 0]
        background = (labels == seed[:, None, None]) & (seed > 0)[:, None, None]
        lung = common & ~background
        body = (ru.body | rn.body | lung) & ~background
    return MaskSet(
        options=opts, u=ru, n=rn, common=common, lung=lung, background=background, body=body
    )
