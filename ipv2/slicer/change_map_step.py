"""The IPv2Denoise panel's "Change map" checkbox: show or hide the last result's change map.

When the box is ticked, a finished denoising run (or the last one, when the box is
ticked afterwards) gets :func:`ipv2.slicer.change_overlay.show_change_map`: the voxels
changed beyond the input's own noise, as a label overlay on the denoised volume, and
the one-line summary the panel shows under the box. Unticking takes the overlay out of
the slice views and keeps its nodes.

The overlay is found again through node references on the denoised node (not through
state held by the widget), so it survives closing and re-opening the module, and
ticking the box again shows the map already computed instead of computing it twice.
The input it compares with is the volume the run denoised (the source reference
:meth:`DicomExportMixin.fileDenoised` records), else the panel's uLDCT. No Qt.
"""

from __future__ import annotations

from typing import Any

from ipv2.slicer.dicom_export import MADE_BY, SOURCE_REFERENCE
from ipv2.slicer.nodes import scene_or_default

LABELS_REFERENCE = "ipv2ChangeMap"
DIFFERENCE_REFERENCE = "ipv2ChangeDifference"
SUMMARY_ATTRIBUTE = "IPv2.ChangeMapSummary"


def _overlay_nodes(denoised: Any) -> tuple[Any, Any]:
    """The label and difference nodes of ``denoised``'s change map (None when absent)."""
    return (
        denoised.GetNodeReference(LABELS_REFERENCE),
        denoised.GetNodeReference(DIFFERENCE_REFERENCE),
    )


def compared_input(p: Any) -> Any:
    """The volume the last result was denoised from; the panel's uLDCT for a volume IPv2
    did not make (one loaded from a file). None for an IPv2 result whose source has left
    the scene: the selection may then be another scan (the selectors stay usable during
    a run). Its reference is then missing or dangling: Slicer's vtkMRMLScene::RemoveNode
    (Libs/MRML/Core/vtkMRMLScene.cxx) calls UpdateReferences on the referring nodes, which
    drops references to nodes no longer in the scene."""
    denoised = p.denoisedVolume
    if denoised is None:
        return p.uldctVolume
    source = denoised.GetNodeReference(SOURCE_REFERENCE)
    if source is not None or _made_by_ipv2(denoised):
        return source
    return p.uldctVolume


def _made_by_ipv2(node: Any) -> bool:
    return bool(node.GetAttribute(MADE_BY[0]))  # dicom_export.record_derivation


def update_change_map(p: Any, scene: Any = None, *, enabled: bool | None = None) -> str:
    """Show ``p.denoisedVolume``'s change map when ``enabled`` (default ``p.changeMap``),
    hide it when not.

    Returns the summary line for the panel ('' when there is nothing to show). Computes
    the map only when the denoised volume has none yet. The checkbox's slot passes its
    own state as ``enabled``: it need not rely on the parameter node having been written
    first (Slicer's QCheckBox connector writes on ``stateChanged``; v5.10.0
    Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, QCheckBoxToBoolConnector).
    """
    on = bool(p.changeMap if enabled is None else enabled)
    from ipv2.slicer.change_overlay import (
        ChangeOverlay,
        hide_in_slice_views,
        show_change_map,
        show_in_slice_views,
    )

    scene = scene_or_default(scene)
    denoised = p.denoisedVolume
    if denoised is None:
        return "Denoise a volume; its change map appears here." if on else ""
    labels, difference = _overlay_nodes(denoised)
    if not on:
        if labels is not None:
            hide_in_slice_views(scene, labels)
        return ""
    summary = labels.GetAttribute(SUMMARY_ATTRIBUTE) if labels is not None else None
    if labels is not None and summary:
        show_in_slice_views(scene, denoised, labels)
        return str(summary)
    source = compared_input(p)
    if source is None and _made_by_ipv2(denoised):
        return (
            f"The change map needs the volume {denoised.GetName()!r} was denoised from, "
            "which is no longer in the scene; denoise the scan again to see its change map."
        )
    if source is None:
        return "The change map needs the volume that was denoised; select it as uLDCT."
    previous = (
        ChangeOverlay(labels=labels, difference=difference)
        if labels is not None and difference is not None
        else None
    )
    overlay = show_change_map(source, denoised, overlay=previous, scene=scene)
    denoised.SetNodeReferenceID(LABELS_REFERENCE, overlay.labels.GetID())
    denoised.SetNodeReferenceID(DIFFERENCE_REFERENCE, overlay.difference.GetID())
    line = overlay.summary or "no voxels to summarise"
    overlay.labels.SetAttribute(SUMMARY_ATTRIBUTE, line)
    return line
