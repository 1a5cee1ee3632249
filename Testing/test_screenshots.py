"""Resources/Screenshots (issue 13, Extension Index): drawn from the panels' logic on a
real MRML scene; the mask overlay shows the segmentation node's lung, not a mock-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def test_screenshots_show_the_scenes_masks_and_the_panels_curve(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.benchmarks.mask_montage import PANEL
    from ipv2.benchmarks.screenshots import denoise_screenshots, train_screenshot
    from ipv2.slicer.segments import segment_array

    masks_png, compare_png = denoise_screenshots(tmp_path, size=64, slices=4)
    assert Image.open(compare_png).size[0] == 3 * PANEL  # uLDCT, NDCT, third view
    # The right panel's red pixels are the lung segment of the scene's segmentation node.
    segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    u_node = scene.GetFirstNodeByName("chest uLDCT")
    lung = segment_array(segmentation, "lung", u_node)[2]
    rgb = np.asarray(Image.open(masks_png).convert("RGB")).astype(int)
    right = rgb[22 : 22 + PANEL, PANEL : 2 * PANEL]
    red = (right[..., 0] - right[..., 1] > 60) & (right[..., 0] - right[..., 2] > 60)
    assert lung.any()
    assert abs(red.mean() - lung.mean()) < 0.02, (red.mean(), lung.mean())
    left = rgb[22 : 22 + PANEL, :PANEL]
    assert not ((left[..., 0] - left[..., 1] > 60).any())  # no overlay on the plain view

    curve = train_screenshot(tmp_path, steps=4, work=tmp_path)
    pixels = np.asarray(Image.open(curve).convert("RGB")).astype(int)
    blue = (pixels[..., 2] - pixels[..., 0] > 80).sum()
    assert blue > 20  # the validation MAE series was plotted from the table's rows
