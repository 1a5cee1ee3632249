"""Several axial slices as one 2D image, so one library call processes them all.

A Python loop that calls OpenCV or scipy once per slice spends a large share of its time
in call overhead and holds the GIL while it does, which keeps the slice threads from
running together. Stacking ``k`` slices along y, with ``gap`` spacer rows after each,
turns a block into one tall image: erosion sees set spacer rows where a slice ends (as it
sees the image border), dilation and labelling see unset ones, so nothing reaches from one
slice into the next as long as the gap is at least the structuring element's radius.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


class SliceBlock:
    """A ``(k, h + gap, w)`` boolean buffer seen as ``k`` slices or as one tall image."""

    def __init__(self, k: int, h: int, w: int, gap: int = 1) -> None:
        if gap < 1:
            raise ValueError(f"slices need at least one spacer row between them, got {gap}")
        self.k, self.h, self.w, self.gap = k, h, w, gap
        self.buffer: BoolArray = np.zeros((k, h + gap, w), dtype=bool)

    @classmethod
    def like(cls, other: SliceBlock, image: npt.NDArray[np.bool_]) -> SliceBlock:
        """A block with ``other``'s geometry holding a tall boolean result."""
        block = cls.__new__(cls)
        block.k, block.h, block.w, block.gap = other.k, other.h, other.w, other.gap
        block.buffer = np.asarray(image, dtype=bool).reshape(other.buffer.shape)
        return block

    @property
    def slices(self) -> BoolArray:
        """The ``(k, h, w)`` view of the slices (writable)."""
        return self.buffer[:, : self.h]

    @property
    def image(self) -> BoolArray:
        """The tall ``(k * (h + gap), w)`` image (a view)."""
        return self.buffer.reshape(-1, self.w)

    def rows(self, zs: npt.NDArray[np.intp], ys: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Rows of the tall image holding row ``ys`` of slice ``zs``."""
        return np.asarray(zs * (self.h + self.gap) + ys, dtype=np.intp)

    def set_gaps(self, value: bool) -> None:
        self.buffer[:, self.h :] = value

    def adopt(self, image: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """The ``(k, h, w)`` slices of a tall result (labels, an eroded mask) as a view."""
        return image.reshape(self.k, self.h + self.gap, self.w)[:, : self.h]

    def replace(self, image: BoolArray) -> None:
        """Take a tall boolean result (an eroded image, say) as the block's new buffer."""
        self.buffer = np.asarray(image, dtype=bool).reshape(self.buffer.shape)
