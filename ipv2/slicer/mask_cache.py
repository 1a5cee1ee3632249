"""Whole-volume masks for the live preview, computed once per (volume pair, options).

The paper's masks treat slices independently, so the preview computes one slice on
every slider move. The ``anatomical`` variant (:mod:`ipv2.purification.anatomical`) keeps
the lungs by their 3D connectivity: one slice alone has none, and its 2D fallback cannot
tell a stomach bubble from a lung base. So for that variant the preview computes the
whole volume's masks once, keeps them here as one label byte per voxel, and shows slice
``k`` from the cache. The key holds each node's ID and modified time (the node's and its
image data's, so replacing or editing the voxels invalidates it) and the mask options;
any change recomputes. Qt-free and MRML-agnostic: anything with ``GetID``/``GetMTime``
(and ``GetImageData``) works, so it is tested on a real MRML scene.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]

NOTHING, BACKGROUND, BODY, LUNG = 0, 1, 2, 3
"""Label values: nothing (e.g. the table), background, body without lung, lung."""


@dataclass(frozen=True)
class VolumeMasks:
    """One volume pair's masks as a label volume, with each slice's uLDCT threshold."""

    labels: npt.NDArray[np.uint8]  # (z, y, x), values NOTHING..LUNG
    thresholds: npt.NDArray[np.float64]

    def slice_masks(self, k: int) -> dict[str, BoolArray]:
        """Slice ``k``'s background, body (lung excluded) and lung, each (1, y, x)."""
        sl = self.labels[k : k + 1]
        return {"background": sl == BACKGROUND, "body": sl == BODY, "lung": sl == LUNG}


def node_stamp(node: Any) -> tuple[str, int] | None:
    """A node's identity and the latest of its and its voxels' modified times."""
    if node is None:
        return None
    stamp = int(node.GetMTime())
    image = node.GetImageData() if hasattr(node, "GetImageData") else None
    if image is not None:
        stamp = max(stamp, int(image.GetMTime()))
        scalars = image.GetPointData().GetScalars()
        if scalars is not None:
            stamp = max(stamp, int(scalars.GetMTime()))
    return str(node.GetID()), stamp


def labels_from(masks: Any) -> VolumeMasks:
    """Pack an engine :class:`ipv2.purification.masks.MaskSet` into a label volume."""
    labels = np.zeros(masks.lung.shape, dtype=np.uint8)
    labels[masks.background] = BACKGROUND
    labels[masks.body & ~masks.lung] = BODY
    labels[masks.lung] = LUNG
    return VolumeMasks(labels=labels, thresholds=np.asarray(masks.u.dark.thresholds))


class VolumeMaskCache:
    """The last volume pair's masks; recomputed when the key changes.

    One entry only: a preview shows one pair at a time, and a label volume of a 300-slice
    512 x 512 series is 78 MB.
    """

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._value: VolumeMasks | None = None
        self.computed = 0  # computations since the last clear (for tests and status lines)

    def get(self, key: Hashable, compute: Callable[[], VolumeMasks]) -> VolumeMasks:
        """The cached masks for ``key``, computing them when the key is new."""
        if self._value is None or key != self._key:
            self._value, self._key = None, None  # never keep stale masks if compute fails
            value = compute()
            self._value, self._key = value, key
            self.computed += 1
        return self._value

    def for_nodes(
        self,
        u_node: Any,
        n_node: Any | None,
        options: Any,
        *,
        voxels: Callable[[Any], npt.NDArray[Any]],
    ) -> VolumeMasks:
        """Whole-volume masks of the pair (``N = U`` without an NDCT) with ``options``;
        ``voxels`` reads a node's (z, y, x) array (the workflows' reader)."""
        key = (node_stamp(u_node), node_stamp(n_node), options)

        def compute() -> VolumeMasks:
            from ipv2.purification.masks import purification_masks

            u = voxels(u_node)
            n = voxels(n_node) if n_node is not None else u
            return labels_from(purification_masks(u, n, options))

        return self.get(key, compute)

    def clear(self) -> None:
        """Forget the masks (the scene was closed) and restart the count."""
        self._key, self._value = None, None
        self.computed = 0


PREVIEW_CACHE = VolumeMaskCache()
"""The live preview's cache (one per Slicer session, like the preview itself)."""
