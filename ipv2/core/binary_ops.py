"""Binary image operations for the masks, from OpenCV or from scipy.

The masks need erosion and dilation (an opening), labelling, the components touching
the border, the components holding given seed pixels, hole filling and a lookup of
flagged components. OpenCV's versions are much faster than scipy's on a
512 x 512 slice (about 30 times for the opening; a flood fill from the border instead of
labelling every component), and they are what brings purification under 2 ms per slice.
scipy's give exactly the same masks and are used where OpenCV cannot be imported (a
Slicer whose own ``cv2`` is broken, say). The test suite runs both on the same images
and requires identical results, so each library checks the other.

Both follow scipy's conventions: erosion treats the outside of the image as set and
dilation as unset; labels are 0 for "not in the mask" and 1..count for components, in no
particular order (nothing downstream depends on it).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]
SizeArray = npt.NDArray[np.int64]
LabelArray = npt.NDArray[np.integer]

_log = logging.getLogger(__name__)
_MAX_FLOOD_COMPONENTS = 255  # ids a flood-fill mask can hold; more falls back to labelling


class BinaryOps(Protocol):
    """The operations the masks are built from, on one 2D image."""

    name: str

    def erode(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        """Erosion by ``footprint``; the outside of the image counts as set."""
        ...

    def dilate(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        """Dilation by ``footprint``; the outside of the image counts as unset."""
        ...

    def label(self, mask: BoolArray, connectivity: int) -> tuple[LabelArray, int]:
        """Components of ``mask`` with 4- or 8-connectivity, and how many there are."""
        ...

    def border_connected(self, mask: BoolArray, connectivity: int) -> BoolArray:
        """The components of ``mask`` that touch the image border."""
        ...

    def seeded(
        self, mask: BoolArray, ys: IndexArray, xs: IndexArray, *, connectivity: int
    ) -> tuple[LabelArray, SizeArray]:
        """Labels 1..m of only the components of ``mask`` that hold a seed
        ``(ys[i], xs[i])``, and their sizes in pixels (``sizes[0]`` is 0)."""
        ...

    def fill_holes(self, mask: BoolArray) -> BoolArray:
        """``mask`` plus the 4-connected parts of its complement that miss the border."""
        ...

    def select(self, table: BoolArray, labels: LabelArray) -> BoolArray:
        """``table[labels]``: the pixels of the components flagged in ``table``.

        ``table`` must hold an entry for every label (count + 1 of them).
        """
        ...


def select(table: BoolArray, labels: LabelArray) -> BoolArray:
    """``table[labels]`` with numpy, for any number of labels."""
    return np.take(table, labels)


def _keep_seeded(
    labels: LabelArray, count: int, ys: IndexArray, xs: IndexArray
) -> tuple[LabelArray, SizeArray]:
    """Relabel 1..m the components that hold a seed; every other pixel becomes 0."""
    hit = np.unique(labels[ys, xs])
    hit = hit[hit > 0]
    remap = np.zeros(count + 1, dtype=np.int32)
    remap[hit] = np.arange(1, hit.size + 1, dtype=np.int32)
    kept = np.take(remap, labels)
    sizes = np.bincount(kept.ravel(), minlength=hit.size + 1).astype(np.int64)
    sizes[0] = 0
    return kept, sizes


class ScipyOps:
    """scipy.ndimage: the reference implementation."""

    name = "scipy"

    def erode(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        return np.asarray(ndimage.binary_erosion(mask, footprint, border_value=1), dtype=bool)

    def dilate(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        return np.asarray(ndimage.binary_dilation(mask, footprint), dtype=bool)

    def label(self, mask: BoolArray, connectivity: int) -> tuple[LabelArray, int]:
        structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        labels, count = ndimage.label(mask, structure)
        return np.asarray(labels, dtype=np.int32), int(count)

    def border_connected(self, mask: BoolArray, connectivity: int) -> BoolArray:
        labels, count = self.label(mask, connectivity)
        edge = np.zeros(count + 1, dtype=bool)
        for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            edge[side] = True
        edge[0] = False
        return select(edge, labels)

    def seeded(
        self, mask: BoolArray, ys: IndexArray, xs: IndexArray, *, connectivity: int
    ) -> tuple[LabelArray, SizeArray]:
        return _keep_seeded(*self.label(mask, connectivity), ys, xs)

    def fill_holes(self, mask: BoolArray) -> BoolArray:
        return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)

    def select(self, table: BoolArray, labels: LabelArray) -> BoolArray:
        return select(table, labels)


class OpenCVOps:
    """OpenCV: the fast path, on uint8 views of the boolean masks."""

    name = "opencv"

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2

    def _u8(self, mask: BoolArray) -> npt.NDArray[np.uint8]:
        return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)

    def erode(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        return self._morphology(self._cv2.erode, mask, footprint, outside=1)

    def dilate(self, mask: BoolArray, footprint: BoolArray) -> BoolArray:
        return self._morphology(self._cv2.dilate, mask, footprint, outside=0)

    def _morphology(
        self, operation: Any, mask: BoolArray, footprint: BoolArray, *, outside: int
    ) -> BoolArray:
        kernel = footprint.astype(np.uint8)
        border = self._cv2.BORDER_CONSTANT
        out = operation(self._u8(mask), kernel, borderType=border, borderValue=outside)
        return np.asarray(out).view(bool)

    def label(self, mask: BoolArray, connectivity: int) -> tuple[LabelArray, int]:
        cv2 = self._cv2
        count, labels = cv2.connectedComponents(
            self._u8(mask), connectivity=connectivity, ltype=cv2.CV_32S
        )
        return np.asarray(labels, dtype=np.int32), int(count) - 1

    def border_connected(self, mask: BoolArray, connectivity: int) -> BoolArray:
        cv2 = self._cv2
        # A one-pixel frame of set pixels joins every component that touches the border,
        # so one flood fill from the frame's corner marks them all.
        framed = cv2.copyMakeBorder(self._u8(mask), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
        cv2.floodFill(framed, None, (0, 0), 2, flags=connectivity)
        return np.asarray(framed[1:-1, 1:-1] == 2)

    def seeded(
        self, mask: BoolArray, ys: IndexArray, xs: IndexArray, *, connectivity: int
    ) -> tuple[LabelArray, SizeArray]:
        cv2 = self._cv2
        image = self._u8(mask)
        # The flood-fill mask doubles as the label image: each fill writes its own id
        # (bits 8-15 of the flags) and stops at pixels an earlier fill already took; it
        # returns the number of pixels it filled.
        ids = np.zeros((image.shape[0] + 2, image.shape[1] + 2), dtype=np.uint8)
        sizes = [0]
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            if not image[y, x] or ids[y + 1, x + 1]:
                continue
            if len(sizes) > _MAX_FLOOD_COMPONENTS:
                return _keep_seeded(*self.label(mask, connectivity), ys, xs)
            flags = connectivity | cv2.FLOODFILL_MASK_ONLY | (len(sizes) << 8)
            filled = cv2.floodFill(image, ids, (x, y), 0, loDiff=0, upDiff=0, flags=flags)[0]
            sizes.append(int(filled))
        return ids[1:-1, 1:-1], np.array(sizes, dtype=np.int64)

    def fill_holes(self, mask: BoolArray) -> BoolArray:
        cv2 = self._cv2
        # The complement's border-touching parts, found as in border_connected; what the
        # fill did not reach are the holes.
        framed = cv2.copyMakeBorder(
            (~mask).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1
        )
        cv2.floodFill(framed, None, (0, 0), 2, flags=4)
        return np.asarray(framed[1:-1, 1:-1] != 2)

    def select(self, table: BoolArray, labels: LabelArray) -> BoolArray:
        if table.size > 256:
            return select(table, labels)
        # A lookup table on 8-bit labels: a quarter of numpy's take on int32 labels.
        lut = np.zeros(256, dtype=np.uint8)
        lut[: table.size] = table
        small = np.ascontiguousarray(labels, dtype=np.uint8)
        return np.asarray(self._cv2.LUT(small, lut)).view(bool)


_DEFAULT: BinaryOps | None = None


def default_ops() -> BinaryOps:
    """OpenCV when it imports, otherwise scipy (same masks, several times slower)."""
    global _DEFAULT
    if _DEFAULT is None:
        try:
            _DEFAULT = OpenCVOps()
        except ImportError as exc:
            _log.info("OpenCV unavailable (%s); masks use scipy, which is slower", exc)
            _DEFAULT = ScipyOps()
    return _DEFAULT


def backend(name: str | None) -> BinaryOps:
    """``"opencv"``, ``"scipy"`` or ``None``/``"auto"`` for :func:`default_ops`."""
    if name in (None, "auto"):
        return default_ops()
    if name == "scipy":
        return ScipyOps()
    if name == "opencv":
        return OpenCVOps()
    raise ValueError(f"mask backend must be 'auto', 'opencv' or 'scipy', got {name!r}")
