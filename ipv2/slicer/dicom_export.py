"""The denoised volume back in its DICOM study: subject hierarchy placement and export.

Slicer's DICOM export (Data module, right-click > Export to DICOM, and the scalar volume
DICOM plugin behind it) takes the patient and study of a series from the subject
hierarchy items above the exported node, and each series tag from the node's own item
attributes (``DICOM.<Tag>``) when present. So a denoised node placed under the source
series' study, with derived-series attributes on its item, is exported into the same
study as a distinct series by Slicer's own dialog, and the panel's one-click export
does the same without the dialog.

Everything here is Qt-free and tested on a real MRML scene (slicer-core); only the
exporter object (``DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass``, which needs
the running application) is passed in by the module.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import slicer

from ipv2.core.errors import InputError, IPv2Error
from ipv2.io.dicom_series import SERIES_NUMBER_OFFSET, Derivation
from ipv2.slicer.nodes import scene_or_default

PREFIX = "DICOM."
# Node attributes that remember how a denoised node was made (model folder, arch, steps).
MADE_BY = ("IPv2.model", "IPv2.arch", "IPv2.steps")
# Node reference from a denoised node to the volume it was denoised from.
SOURCE_REFERENCE = "IPv2Source"
# Series attributes copied from the source series item: still true of the derived series.
_KEPT_SERIES_TAGS = ("Modality", "FrameOfReferenceUID", "Manufacturer", "Model")


def subject_hierarchy(scene: Any | None = None) -> Any:
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene_or_default(scene))


def source_study_item(source_node: Any) -> int:
    """The study item above the source volume, or a one-line error saying how to get one."""
    if source_node is None or source_node.GetScene() is None:
        raise InputError("the volume this was denoised from is no longer in the scene")
    sh = subject_hierarchy(source_node.GetScene())
    item = sh.GetItemByDataNode(source_node)
    study = sh.GetItemParent(item) if item else 0
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    if not study or sh.GetItemLevel(study) != study_level:
        raise InputError(
            f"volume '{source_node.GetName()}' is not in a DICOM study (the Data module "
            "shows no patient and study above it); load the series through the DICOM "
            "module so the denoised series can join its study"
        )
    return int(study)


def record_derivation(node: Any, *, model: str, arch: str, steps: int) -> None:
    """Remember on the node what made it, for the series descriptions written later."""
    for key, value in zip(MADE_BY, (Path(model).name, arch, str(steps)), strict=True):
        node.SetAttribute(key, value)


def derivation_of(node: Any) -> Derivation:
    model, arch, steps = (node.GetAttribute(key) or "" for key in MADE_BY)
    return Derivation(
        model=model or "unknown model",
        arch=arch or "model",
        steps=int(steps) if steps.isdigit() else 0,
    )


def place_under_source_study(node: Any, source_node: Any) -> int:
    """Put ``node`` in the source's study with derived-series attributes; its item ID.

    The item gets no DICOM UID: Slicer's export then makes a new Series Instance UID,
    so the result is never merged into the source series.
    """
    study = source_study_item(source_node)
    sh = subject_hierarchy(source_node.GetScene())
    item = sh.GetItemByDataNode(node) or sh.CreateItem(study, node)
    sh.SetItemParent(item, study)
    source_item = sh.GetItemByDataNode(source_node)
    for tag in _KEPT_SERIES_TAGS:
        value = sh.GetItemAttribute(source_item, PREFIX + tag)
        if value:
            sh.SetItemAttribute(item, PREFIX + tag, value)
    if not sh.GetItemAttribute(item, PREFIX + "Modality"):
        sh.SetItemAttribute(item, PREFIX + "Modality", "CT")
    number = sh.GetItemAttribute(source_item, PREFIX + "SeriesNumber")
    offset = int(number) if number.strip().isdigit() else 0
    sh.SetItemAttribute(item, PREFIX + "SeriesNumber", str(offset + SERIES_NUMBER_OFFSET))
    description = derivation_of(node).series_description()
    sh.SetItemAttribute(item, PREFIX + "SeriesDescription", description)
    return int(item)


def export_tags(item: int, scene: Any | None = None) -> dict[str, str]:
    """The DICOM tags Slicer's dialog would give the exporter for ``item``.

    Patient tags from the patient item, study tags from the study item (the Study
    Instance UID from its DICOM UID when the attribute is empty), series tags from the
    item itself: the same sources Slicer's export dialog reads.
    """
    sh = subject_hierarchy(scene)
    study = sh.GetItemParent(item)
    patient = sh.GetItemParent(study)
    tags: dict[str, str] = {}
    for owner in (patient, study, item):
        for name in sh.GetItemAttributeNames(owner):
            if name.startswith(PREFIX):
                tags[name[len(PREFIX) :]] = sh.GetItemAttribute(owner, name)
    if not tags.get("StudyInstanceUID"):
        tags["StudyInstanceUID"] = sh.GetItemUID(study, "DICOM")
    if not tags.get("PatientID"):
        tags["PatientID"] = sh.GetItemUID(patient, "DICOM")
    if not tags["StudyInstanceUID"]:
        raise InputError("the source's study has no Study Instance UID; load it from DICOM")
    return tags


def export_as_dicom(
    node: Any,
    source_node: Any,
    directory: str | os.PathLike[str],
    *,
    exporter: Any,
) -> Path:
    """Place ``node`` in the source's study and export it with Slicer's DICOM plugin.

    ``exporter`` is ``DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()``; the
    calls follow Slicer's script repository ("Export a volume to DICOM file format",
    Docs/developer_guide/script_repository/dicom.md) and the plugin's ``export``
    (Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py), which writes into a
    ``ScalarVolume_<item>`` subfolder and returns an error text, empty on success.
    """
    target = Path(directory)
    if not target.is_dir():
        raise InputError(f"DICOM export folder {target} does not exist")
    item = place_under_source_study(node, source_node)
    exportables = exporter.examineForExport(item)
    if not exportables:
        raise InputError(f"Slicer's DICOM export cannot export '{node.GetName()}'")
    tags = export_tags(item, node.GetScene())
    for exportable in exportables:
        exportable.directory = str(target)
        for name, value in tags.items():
            exportable.setTag(name, value)
    error = exporter.export(exportables)
    if error:
        raise IPv2Error(f"Slicer's DICOM export failed: {error}")
    return target / f"ScalarVolume_{item}"


class DicomExportMixin:
    """The panel's DICOM steps, parameterised by its parameter node ``p``."""

    @staticmethod
    def fileDenoised(p: Any, node: Any, run: Any) -> None:
        """After a run: remember the node, its source and what made it; join the study.

        A source that was not loaded from DICOM leaves the node where it is; only the
        export then says why it cannot join a study.
        """
        argv = list(run.job.argv)
        model = argv[argv.index("--model") + 1] if "--model" in argv else ""
        steps = int((run.job.result or {}).get("steps") or 0)
        record_derivation(node, model=model, arch=_arch(model), steps=steps)
        node.SetNodeReferenceID(SOURCE_REFERENCE, run.input_node_id)
        p.denoisedVolume = node
        with contextlib.suppress(InputError):
            place_under_source_study(node, node.GetNodeReference(SOURCE_REFERENCE))

    @staticmethod
    def exportDicom(p: Any, directory: str, exporter: Any = None) -> Path:
        """Export the last denoised node; ``exporter`` defaults to Slicer's own plugin."""
        if exporter is None:  # only inside the application, which provides the plugin
            from DICOMScalarVolumePlugin import DICOMScalarVolumePluginClass

            exporter = DICOMScalarVolumePluginClass()
        node = p.denoisedVolume
        if node is None:
            raise InputError("denoise a volume first; then export the result as DICOM")
        source = node.GetNodeReference(SOURCE_REFERENCE)
        return export_as_dicom(node, source, directory, exporter=exporter)


def _arch(model: str) -> str:
    from ipv2.io.checkpoints import read_metadata

    try:
        return str(read_metadata(model).get("arch") or "model")
    except IPv2Error:
        return "model"
