"""The engine's only door to Slicer: MRML nodes <-> engine values, and node workflows.

Everything here works on real MRML nodes (``slicer-core`` outside the application, the
real scene inside it) and contains no Qt, so the module Logic classes stay one-liners
over these functions and the tests exercise them on a real ``vtkMRMLScene``.

Geometry: the engine keeps ITK's LPS convention (``Volume.origin``/``direction``), MRML
keeps RAS; the conversion flips the first two world axes. Parent transforms of a node
are not applied (harden them first; :func:`volume_from_node` reports them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import slicer
import vtk
from vtk.util import numpy_support

from ipv2.errors import InputError
from ipv2.volume import Volume

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])

# Segments of the purification masks: id -> (display name, RGB colour).
MASK_SEGMENTS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "background": ("Background (air outside the patient)", (0.25, 0.45, 0.95)),
    "body": ("Body (chest wall, mediastinum, bone)", (0.93, 0.75, 0.55)),
    "lung": ("Lung", (0.95, 0.35, 0.45)),
}


def _scene(scene: Any | None) -> Any:
    scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise InputError("no MRML scene: pass scene= or set slicer.mrmlScene")
    return scene


def ijk_to_ras(volume: Volume) -> npt.NDArray[np.float64]:
    """The 4x4 IJK-to-RAS matrix of a volume (what MRML volume nodes store)."""
    m = np.eye(4)
    m[:3, :3] = _LPS_RAS @ volume.direction @ np.diag(volume.spacing)
    m[:3, 3] = _LPS_RAS @ np.asarray(volume.origin)
    return m


def _vtk_matrix(m: npt.NDArray[np.float64]) -> Any:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _numpy_matrix(m: Any) -> npt.NDArray[np.float64]:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_from_node(node: Any) -> Volume:
    """A scalar volume node as a :class:`Volume` (voxels copied, geometry converted)."""
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError("select a scalar volume node (a CT volume)")
    image = node.GetImageData()
    if image is None:
        raise InputError(f"volume '{node.GetName()}' has no voxel data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{node.GetName()}' is not a single-component CT volume")
    dims = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = scalars.reshape(dims[2], dims[1], dims[0]).astype(np.float32)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    mat = _numpy_matrix(m)
    spacing = np.asarray(node.GetSpacing(), dtype=np.float64)
    direction = _LPS_RAS @ mat[:3, :3] / spacing[np.newaxis, :]
    origin = _LPS_RAS @ mat[:3, 3]
    return Volume(array, tuple(spacing), tuple(origin), direction)


def node_from_volume(
    volume: Volume,
    name: str,
    scene: Any | None = None,
    node: Any | None = None,
    dtype: str = "float32",
) -> Any:
    """Put a volume into a (new or given) scalar volume node, geometry included."""
    scene = _scene(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    data = volume.array if dtype == "float32" else np.rint(volume.array).astype(np.int16)
    image = vtk.vtkImageData()
    z, y, x = data.shape
    image.SetDimensions(x, y, z)
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(data).ravel(), deep=True)
    image.GetPointData().SetScalars(vtk_array)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(volume)))
    node.SetAndObserveImageData(image)
    if node.GetDisplayNode() is None and hasattr(node, "CreateDefaultDisplayNodes"):
        node.CreateDefaultDisplayNodes()
    return node


def output_name(input_node: Any, suffix: str) -> str:
    """Output nodes are named after their input, e.g. ``chest uLDCT IPv2 denoised``."""
    return f"{input_node.GetName()} {suffix}"


# -- segmentations --------------------------------------------------------------------


def _ensure_converter_rules() -> None:
    """The segmentation machinery needs its converter rules (the app registers them)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    if rules is None or len(rules) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _oriented_image(mask: npt.NDArray[np.bool_], reference: Any, first_slice: int) -> Any:
    image = slicer.vtkOrientedImageData()
    z, y, x = mask.shape
    image.SetExtent(0, x - 1, 0, y - 1, first_slice, first_slice + z - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = mask.astype(np.uint8).ravel()
    m = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    return image


def update_mask_segmentation(
    masks: Mapping[str, npt.NDArray[np.bool_]],
    reference: Any,
    segmentation: Any | None = None,
    first_slice: int = 0,
    scene: Any | None = None,
    name: str | None = None,
) -> Any:
    """Show purification masks as named, coloured segments of a segmentation node.

    ``masks`` maps segment ids of :data:`MASK_SEGMENTS` to bool arrays (z, y, x) that
    start at slice ``first_slice`` of ``reference``: a whole volume, or the single slice
    a live preview recomputed. Existing segments are replaced, so the node can be
    updated many times a second without growing.
    """
    scene = _scene(scene)
    _ensure_converter_rules()
    if segmentation is None:
        label = name or output_name(reference, "IPv2 masks")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", label)
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    seg = segmentation.GetSegmentation()
    for segment_id, mask in masks.items():
        if segment_id not in MASK_SEGMENTS:
            raise InputError(f"unknown mask '{segment_id}'; expected one of {list(MASK_SEGMENTS)}")
        if mask.ndim == 2:
            mask = mask[np.newaxis]
        display, color = MASK_SEGMENTS[segment_id]
        if seg.GetSegment(segment_id) is not None:
            seg.RemoveSegment(segment_id)
        image = _oriented_image(mask, reference, first_slice)
        segmentation.AddSegmentFromBinaryLabelmapRepresentation(image, display, color, segment_id)
    return segmentation


def segment_array(segmentation: Any, segment_id: str, reference: Any) -> npt.NDArray[np.bool_]:
    """A segment as a bool array on the reference volume's grid (z, y, x)."""
    image = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, image)
    ref = reference.GetImageData().GetDimensions()
    out = np.zeros((ref[2], ref[1], ref[0]), dtype=bool)
    if image.GetPointData().GetScalars() is None:
        return out
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0:
        return out
    data = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    block = data.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    # Shared labelmaps store several segments as label values; pick this one's value.
    value = seg_label_value(segmentation, segment_id)
    out[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1] = block == value
    return out


def seg_label_value(segmentation: Any, segment_id: str) -> int:
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    return int(segment.GetLabelValue()) if hasattr(segment, "GetLabelValue") else 1


# -- dependencies inside Slicer -------------------------------------------------------


def install_dependencies(
    confirm: Callable[[str], bool],
    requirements: Sequence[Any] | None = None,
    pip_install: Callable[[list[str]], Any] | None = None,
    torch_available: bool | None = None,
) -> bool:
    """Complete the engine's Python packages on first use; True when all are present.

    Asks ``confirm`` (a Yes/No dialog in the GUI) with the list of packages first, installs
    torch through the PyTorch extension (which picks a CUDA build when a driver is
    present) and the rest through Slicer's pip with Slicer's numpy, SimpleITK and VTK
    pinned. Returns False when the user declines; raises :class:`IPv2Error` with pip's
    output and a hint when an install fails. Never called at import time.
    """
    import importlib
    import importlib.util
    import os
    import tempfile

    from ipv2 import requirements as rq
    from ipv2.errors import IPv2Error

    need = rq.missing(rq.ENGINE_REQUIREMENTS if requirements is None else requirements)
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
    if not need and torch_available:
        return True
    if not confirm(rq.confirmation_text(need, torch_needed=not torch_available)):
        return False
    if not torch_available:
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise IPv2Error(
                "IPv2 needs the PyTorch extension: install 'PyTorch' from the Extensions "
                "Manager, restart Slicer and try again"
            ) from exc
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=rq.TORCH_SPEC
        )
        if torch is None:
            raise IPv2Error("PyTorch was not installed; IPv2 cannot run without it")
    if need:
        install = pip_install if pip_install is not None else slicer.util.pip_install
        fd, constraints = tempfile.mkstemp(prefix="ipv2-constraints-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(rq.protected_pins()) + "\n")
        try:
            install(rq.pip_arguments(need, constraints))
        except Exception as exc:
            output = str(getattr(exc, "output", "") or getattr(exc, "stderr", "") or exc)
            names = ", ".join(r.pip for r in need)
            raise IPv2Error(
                f"installing {names} failed:\n{output}\n\n{rq.failure_hint(output)}"
            ) from exc
        finally:
            os.unlink(constraints)
    importlib.invalidate_caches()
    return True
