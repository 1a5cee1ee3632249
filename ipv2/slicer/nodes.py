"""Scalar volume nodes <-> :class:`Volume`, with IJK-to-RAS geometry kept exactly.

The engine keeps ITK's LPS convention (``Volume.origin``/``direction``); MRML keeps RAS.
The conversion flips the first two world axes. Parent transforms of a node are not
applied (harden them first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import slicer
import vtk
from vtk.util import numpy_support

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.io.volumes import hu_as_int16
from ipv2.slicer.paths import path_text

__all__ = [
    "ijk_to_ras",
    "node_from_volume",
    "output_name",
    "path_text",
    "scene_or_default",
    "volume_from_node",
]

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def scene_or_default(scene: Any | None) -> Any:
    """The given scene, else ``slicer.mrmlScene`` (set by the application or by tests)."""
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
    if node.GetParentTransformNode() is not None:
        raise InputError(
            f"volume '{node.GetName()}' is under a transform; harden the transform first "
            "(Data module, right-click > Harden transform) so its geometry is what you see"
        )
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
    return Volume(array, tuple(spacing), tuple(origin), direction=direction)


def node_from_volume(
    volume: Volume,
    name: str,
    scene: Any | None = None,
    *,
    node: Any | None = None,
    dtype: str = "float32",
) -> Any:
    """Put a volume into a (new or given) scalar volume node, geometry included."""
    scene = scene_or_default(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    if dtype not in ("float32", "int16"):
        raise InputError(f"volume nodes are written as float32 or int16, not {dtype}")
    data = volume.array if dtype == "float32" else hu_as_int16(volume.array)
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
