"""The ``anatomical`` lung mask: thoracic air connected in 3D, on the patient's body only.

The paper's mask (:mod:`ipv2.purification.mask_blocks`) calls every dark pixel inside
the body outline "lung", slice by slice. On real chest CT that also takes bowel and
stomach gas below the diaphragm, air trapped between the patient's back and the table
pad, air inside a table whose shell fused with the body outline, and, on a very noisy
low-dose slice, noise specks in fat and muscle. This variant keeps the paper's dark
threshold (Otsu on the anatomy, or the fixed override) and changes three things:

1. **The body is the patient only.** Bright pixels are opened with a disk of a few
   millimetres (``body_radius``) before the largest component of each slice is taken, so
   the thin table shell and the pad, which touch the back over a few pixels, fall away;
   the component is then grown back inside the bright pixels and its holes filled. Air
   under the back becomes a concavity of that outline, not a hole, and is not body.
2. **Noise specks are removed at the image's noise level.** Each slice's noise (robust
   standard deviation of neighbour differences in soft tissue, :func:`slice_noise_hu`)
   sets the radius of the dark mask's opening: the paper's radius on routine-dose CT,
   more on a noisy low-dose slice, where speckles below the threshold in fat would
   otherwise survive a 3 x 3 opening.
3. **Lungs are the large air components connected in 3D.** The dark pixels inside the
   body are labelled in 3D (26-connectivity: faces, edges and corners); the components
   holding at least ``KEEP_FRACTION`` of the largest one's voxels are kept: the lungs and airways,
   joined through the trachea or as two lungs. Stomach and bowel gas, gas under the
   back and specks are separate, much smaller 3D components.

A single slice has no 3D connectivity. The 2D fallback keeps, on each slice alone, the
components of at least ``PLANAR_KEEP_FRACTION`` of the slice's largest dark component and
at least a minimum area (noise-scaled, and scaled to the matrix): it drops specks and the thin pockets under the
back, but it cannot tell a large stomach bubble on an abdominal slice from a lung base.
That is why the Slicer preview computes this variant on the whole volume once, caches it
(:mod:`ipv2.slicer.mask_cache`) and shows its slice, and why a stack of one slice is
the only case that uses the fallback. With a partial stack (a few slices, or a range
mostly below the lungs) the "largest" component is only the largest in that range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.morphology import disk

from ipv2.core.binary_ops import BinaryOps
from ipv2.core.thread_pool import map_slices
from ipv2.purification.mask_blocks import block_otsu

if TYPE_CHECKING:
    from ipv2.purification.mask_options import MaskOptions

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]

_CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)
"""3D labelling joins voxels that touch at a face, edge or corner (26-connectivity), as
the 2D fallback joins 8 neighbours: at the apex and the bases a lung's cross-section
shifts by a pixel or two from one 5 mm slice to the next, and face connectivity alone cut
those tips off as separate small components (phantom seed 3 at 256 px lost 59 true lung
voxels that way)."""
KEEP_FRACTION = 0.25
"""3D components of at least this share of the largest are lung. One lung alone holds
40-55% of both; a stomach bubble or a gas-filled bowel loop a few percent."""
PLANAR_KEEP_FRACTION = 0.05
"""2D fallback: components of at least this share of the slice's largest are kept."""
NOISE_HU_PER_RADIUS = 150.0
"""Each 150 HU of noise index adds one pixel to the opening radius (1 up to 150 HU, 2 up
to 300 HU, ...). Routine-dose CT has 10-30 HU and keeps the paper's radius of 1; a very
noisy low-dose slice has 150-300 HU, where dark speckles of 2-4 pixels in fat survive a
3 x 3 opening. The phantom's 2% dose uLDCT measures 80-120 HU (its apex slices the
most): at 100 HU per pixel those slices got radius 2, which shaved true lung off the
boundary and cost 0.001-0.005 lung Dice; the speckles a radius of 1 leaves at 100-150 HU
are small separate 3D components, which the 3D rule drops anyway."""
MAX_RADIUS = 4
MIN_AREA_AT_512 = 100
"""2D fallback: smallest lung component on a 512 x 512 slice (0.7 cm^2 at 0.84 mm); the
trachea measures 2-4 cm^2, a lung cross-section on a slice that shows one much more."""
BODY_PART_FRACTION = 0.5
_SOFT_TISSUE_HU = (-250.0, 250.0)  # fat to muscle, after a 5 x 5 mean (noise estimate)
_MIN_NOISE_PIXELS = 200
_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class AnatomicalRegions:
    """One image's anatomical masks on a stack; ``lung`` lies inside ``dark`` and ``body``."""

    dark: BoolArray  # at or below the threshold (or padding), after the noise-scaled opening
    lung: BoolArray
    body: BoolArray  # the patient only (no table, no pad), lungs included
    thresholds: npt.NDArray[np.float64]
    noise_hu: npt.NDArray[np.float64]  # NaN where a slice had too little soft tissue
    radius: npt.NDArray[np.intp]  # opening radius used on each slice


def slice_noise_hu(vol: FloatArray, pad: BoolArray | None = None) -> npt.NDArray[np.float64]:
    """Noise of each slice (HU): robust std of horizontal neighbour differences / sqrt 2.

    Only pixels whose 5 x 5 mean lies in soft tissue (fat to muscle) and whose
    neighbour's does too are used, so edges of lungs, bone and air barely enter; the
    median absolute deviation ignores the few that do. Neighbouring CT pixels are
    correlated, so this is an index of the fine-grained noise rather than the full
    standard deviation, which is all the opening radius needs. NaN marks a slice with
    fewer than 200 such pixels (a slice of air).
    """
    smooth = ndimage.uniform_filter(vol, size=(1, 5, 5), mode="nearest")
    tissue = (smooth >= _SOFT_TISSUE_HU[0]) & (smooth <= _SOFT_TISSUE_HU[1])
    if pad is not None:
        tissue &= ~pad
    pairs = tissue[:, :, 1:] & tissue[:, :, :-1]
    diff = vol[:, :, 1:] - vol[:, :, :-1]
    out = np.full(vol.shape[0], np.nan)
    for k in range(vol.shape[0]):
        d = diff[k][pairs[k]]
        if d.size < _MIN_NOISE_PIXELS:
            continue
        mad = float(np.median(np.abs(d - np.median(d))))
        out[k] = _MAD_TO_STD * mad / np.sqrt(2.0)
    return out


def noise_radius(noise_hu: npt.NDArray[np.float64], base: int) -> npt.NDArray[np.intp]:
    """Opening radius per slice: at least ``base``, one more pixel per
    ``NOISE_HU_PER_RADIUS`` of noise."""
    noise = np.nan_to_num(noise_hu, nan=0.0)
    scaled = np.ceil(noise / NOISE_HU_PER_RADIUS).astype(np.intp)
    return np.clip(np.maximum(scaled, base), 0, max(MAX_RADIUS, base))


def min_area(radius: int, h: int = 512, w: int = 512) -> int:
    """2D fallback: the smallest component kept, in pixels.

    At least four openings' footprints (what noise leaves after the opening), and at
    least ``MIN_AREA_AT_512`` pixels scaled to the matrix (about 0.7 cm^2 on a ~45 cm
    field of view). The footprint floor alone is 20 pixels at radius 1 whatever the
    matrix, so on a 512 x 512 lung-base slice, whose lungs are small enough that 5% of
    them is a few dozen pixels, a pocket of gas of 0.25 cm^2 was kept as lung.
    """
    footprint = int(4 * disk(max(1, radius)).sum())
    scaled = round(MIN_AREA_AT_512 * min(h, w) ** 2 / 512**2)
    return max(footprint, scaled)


def body_radius(h: int, w: int) -> int:
    """Opening radius that parts the body from the table: about 3-4 mm on a ~45 cm field
    of view at any matrix (4 pixels at 512, 1 at 128)."""
    return max(1, min(h, w) // 128)


@functools.lru_cache(maxsize=16)
def _disk(radius: int) -> BoolArray:
    footprint = disk(radius).astype(bool)
    footprint.flags.writeable = False
    return footprint


def _open(mask: BoolArray, radius: int, ops: BinaryOps) -> BoolArray:
    if radius <= 0:
        return mask
    return ops.dilate(ops.erode(mask, _disk(radius)), _disk(radius))


def patient_body(bright: BoolArray, radius: int, ops: BinaryOps) -> BoolArray:
    """The patient on one slice: the bright pixels with their holes filled, opened; the
    largest component of the eroded mask (and any other at least half its size) is
    grown back inside the filled mask.
    Empty if nothing is bright. The table shell and pad are thinner than the erosion or
    much smaller than the trunk; an arm is too small to count."""
    # Holes are filled first, so a chest wall thinner than the erosion cannot open a
    # lung to the outside air and cut it out of the body.
    solid = np.asarray(ops.fill_holes(bright))
    core = ops.erode(solid, _disk(radius))
    labels, count = ops.label(core, 8)
    if count == 0:
        return np.zeros_like(bright)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    # Halves of a thin-walled body that the erosion parted are kept together.
    largest = np.asarray((sizes >= BODY_PART_FRACTION * sizes.max())[labels])
    grown = ops.dilate(largest, _disk(radius)) & solid
    return np.asarray(ops.fill_holes(grown))


def _airways(labels: npt.NDArray[np.integer], lungs: BoolArray) -> BoolArray:
    """Smaller components that are trachea or main bronchi, beside the kept lungs.

    At CT resolution the airway lumen is walled off from the lung parenchyma, so the
    trachea and bronchi are often their own 3D component, a few percent of the lungs'
    volume. Kept are components centred in the middle third of the lungs' left-right
    extent and inside their front-to-back extent (the mediastinum) whose slices mostly
    overlap the lungs' slices; stomach and colon gas lie laterally or below the lungs, gas
    under the back and table air behind them.
    """
    found = np.zeros_like(lungs)
    boxes = ndimage.find_objects(labels)
    kept = [boxes[i - 1] for i in np.flatnonzero(lungs) if boxes[i - 1] is not None]
    if not kept:
        return found
    z0, z1 = min(b[0].start for b in kept), max(b[0].stop for b in kept)
    y0, y1 = min(b[1].start for b in kept), max(b[1].stop for b in kept)
    x0, x1 = min(b[2].start for b in kept), max(b[2].stop for b in kept)
    third = (x1 - x0) / 3.0
    for i, box in enumerate(boxes, start=1):
        if box is None or lungs[i]:
            continue
        zs, ys, xs = box
        if ys.start < y0 or ys.stop > y1:  # not between the lungs front to back
            continue
        overlap = max(0, min(zs.stop, z1) - max(zs.start, z0))
        centre = (xs.start + xs.stop) / 2.0
        if 2 * overlap >= zs.stop - zs.start and x0 + third <= centre <= x1 - third:
            found[i] = True
    return found


def keep_thoracic_air(candidate: BoolArray, radius: npt.NDArray[np.intp]) -> BoolArray:
    """The large air components: 3D on a stack, the 2D fallback on a single slice."""
    if candidate.shape[0] > 1:
        labels, count = ndimage.label(candidate, structure=_CONNECTIVITY_3D)
        if count == 0:
            return candidate
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        keep = sizes >= KEEP_FRACTION * sizes.max()
        keep[0] = False
        keep |= _airways(labels, keep)
        return np.asarray(keep[labels])
    out = np.zeros_like(candidate)
    for k in range(candidate.shape[0]):
        labels, count = ndimage.label(candidate[k], structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        h, w = candidate.shape[1:]
        floor = max(PLANAR_KEEP_FRACTION * sizes.max(), min_area(int(radius[k]), h, w))
        keep = sizes >= floor
        keep[0] = False
        out[k] = keep[labels]
    return out


def anatomical_regions(
    vol: FloatArray, pad: BoolArray | None, opts: MaskOptions, *, ops: BinaryOps
) -> AnatomicalRegions:
    """Dark mask, lung and patient body of one image's stack (see the module docstring)."""
    k, h, w = vol.shape
    if opts.threshold_hu is not None:
        thresholds = np.full(k, float(opts.threshold_hu))
    else:
        thresholds = block_otsu(vol, pad)
    noise = slice_noise_hu(vol, pad)
    radius = noise_radius(noise, int(opts.opening_radius))
    rb = body_radius(h, w)
    raw_dark = vol <= thresholds.astype(np.float32)[:, None, None]
    if pad is not None:
        raw_dark |= pad
    dark = np.empty_like(raw_dark)
    body = np.empty_like(raw_dark)

    def one_slice(z: int) -> None:
        dark[z] = _open(raw_dark[z], int(radius[z]), ops)
        # The opened dark mask has no noise specks, so its complement is solid tissue.
        bright = ~dark[z] if pad is None else ~(dark[z] | pad[z])
        body[z] = patient_body(bright, rb, ops)

    map_slices(one_slice, k)
    candidate = dark & body
    if pad is not None:
        candidate &= ~pad
    lung = keep_thoracic_air(candidate, radius)
    return AnatomicalRegions(
        dark=dark, lung=lung, body=body, thresholds=thresholds, noise_hu=noise, radius=radius
    )
