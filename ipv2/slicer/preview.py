"""The live mask preview's state: its slice-view observer, its own segmentation, its checks.

Slicer's scripted-module template adds observers in ``enter()`` and removes them in
``exit()`` and ``cleanup()`` (Slicer v5.10.0 Utilities/Templates/Modules/Scripted/
TemplateKey.py), so a panel stops reacting once the user leaves it. The preview used to
observe the Red slice from ``setup()`` for the whole session and to write into the same
segmentation as "Masks for all slices", so scrolling anywhere replaced the whole-volume
masks with one slice. :class:`LivePreview` holds that state without Qt, so it is tested
on a real MRML scene: ``attach`` (enter) / ``detach`` (exit, cleanup), a segmentation
node of its own, and the dependency check (scikit-image, scipy) asked once before the
first preview.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import vtk

from ipv2.slicer.nodes import output_name, scene_or_default

PREVIEW_SUFFIX = "IPv2 preview masks"


class LivePreview:
    """Observer bookkeeping and the preview's segmentation node for one panel."""

    def __init__(self, ensure_dependencies: Callable[[], Any]) -> None:
        self._ensure = ensure_dependencies
        self._observed: Any = None
        self._tag: int | None = None
        self._segmentation_id: str | None = None
        self._reference_id: str | None = None
        self._ready = False
        self.paused_reason: str | None = None

    # -- observers: attach in enter(), detach in exit() and cleanup() ---------------

    def attach(self, slice_node: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``slice_node`` changes (None: nothing to observe)."""
        self.detach()
        if slice_node is None:  # no main window (build-server tests): nothing to follow
            return
        self._tag = slice_node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: callback())
        self._observed = slice_node

    def detach(self) -> None:
        if self._observed is not None and self._tag is not None:
            self._observed.RemoveObserver(self._tag)
        self._observed, self._tag = None, None

    @property
    def attached(self) -> bool:
        return self._observed is not None

    # -- dependencies: asked once, before the first preview ------------------------

    def dependencies_ready(self) -> bool:
        """Ask for missing packages once; after a refusal stay paused until :meth:`resume`."""
        if self._ready or self.paused_reason is not None:
            return self._ready
        if self._ensure():
            self._ready = True
        else:
            self.paused_reason = (
                "the live preview needs scikit-image and scipy, which are not installed; "
                "use any IPv2 action to install them"
            )
        return self._ready

    def resume(self) -> None:
        """Ask again on the next preview (the user re-entered the module)."""
        self.paused_reason = None

    # -- the preview's own segmentation ---------------------------------------------

    def segmentation(self, reference: Any, scene: Any | None = None) -> Any:
        """The preview's segmentation for ``reference``, never the whole-volume masks' node."""
        scene = scene_or_default(scene)
        node = scene.GetNodeByID(self._segmentation_id) if self._segmentation_id else None
        if node is not None and self._reference_id != reference.GetID():
            node = None  # another uLDCT was chosen: a node of its own
        if node is None:
            node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", output_name(reference, PREVIEW_SUFFIX)
            )
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            self._segmentation_id, self._reference_id = node.GetID(), reference.GetID()
        return node

    def forget_nodes(self) -> None:
        """The scene was closed: the next preview creates its node anew."""
        self._segmentation_id = None

    def update(self, p: Any, k: int, *, logic: Any, scene: Any | None = None) -> str:
        """Preview slice ``k`` with the panel's settings; the status line to show."""
        if not self.dependencies_ready():
            return f"Live preview paused: {self.paused_reason}."
        try:
            seg = self.segmentation(p.uldctVolume, scene)
            return str(logic.previewSlice(p, k, seg).describe())
        except Exception as exc:  # shown in the status line: a bad slice never breaks the panel
            return f"Preview failed: {exc}"


def current_slice(u_node: Any, scene: Any | None = None) -> int:
    """The uLDCT slice under the centre of the Red view (the middle one without a Red view).

    Read from the scene's Red slice node rather than the layout manager, which does not
    exist when Slicer runs without a main window (build-server self-tests).
    """
    from ipv2.slicer.workflows import slice_index_at

    red = scene_or_default(scene).GetSingletonNode("Red", "vtkMRMLSliceNode")
    if red is None:
        return int(u_node.GetImageData().GetDimensions()[2] // 2)
    center = red.GetSliceToRAS().MultiplyPoint((0.0, 0.0, 0.0, 1.0))[:3]
    return slice_index_at(u_node, (center[0], center[1], center[2]))
