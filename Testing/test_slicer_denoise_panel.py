"""IPv2Denoise's steps line and change-map checkbox (issue 14, items 3 and 4), through the
Qt-free logic the panel calls, on real MRML nodes (slicer-core), plus the .ui wiring."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from factories import tiny_checkpoint
from module_checks import parameter_fields, ui_bindings, ui_widgets
from scipy import ndimage
from test_steps_auto import with_curve

from ipv2.phantom import PhantomCase, make_phantom
from ipv2.slicer import node_from_volume

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "IPv2Denoise/IPv2Denoise.py"
UI = REPO / "IPv2Denoise/Resources/UI/IPv2Denoise.ui"


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return make_phantom(128, 4, seed=3)


def _panel(**values: Any) -> SimpleNamespace:
    base = dict(modelPath=Path(), steps=0, uldctVolume=None, denoisedVolume=None, changeMap=False)
    base.update(values)
    return SimpleNamespace(**base)


# -- the steps line ------------------------------------------------------------------------


def test_steps_line_shows_the_choice_and_the_expected_time(scene, case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin as Logic

    model = with_curve(tiny_checkpoint(tmp_path / "m"))  # measured at 64x64 on cpu
    volume = node_from_volume(case.uldct, "chest", scene)  # 4 slices of 128x128
    text = Logic.stepsEstimate(_panel(modelPath=model, uldctVolume=volume))
    assert text.startswith("Steps: 2 steps (auto: the fewest within 1.2 HU")
    # 50 ms at 64x64 is 200 ms at 128x128 (4x the pixels), 0.8 s for 4 slices.
    assert "Expected time: about 200 ms per slice, 800 ms for these 4 slices" in text
    assert "(measured in training on cpu, 4 validation slices of 64x64; scaled to 128x128)" in text
    given = Logic.stepsEstimate(_panel(modelPath=model, steps=5, uldctVolume=volume))
    assert given.startswith("Steps: 5 steps (as given).") and "500 ms per slice" in given
    no_volume = Logic.stepsEstimate(_panel(modelPath=model))
    assert "about 50 ms per slice (measured" in no_volume and "these" not in no_volume


def test_steps_line_for_old_unset_and_broken_models(tmp_path: Path) -> None:
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin as Logic

    old = Logic.stepsEstimate(_panel(modelPath=tiny_checkpoint(tmp_path / "old")))
    assert old == (
        "Steps: 10 steps (the model's configured steps, since its model.json has no steps "
        "curve (measured at the end of training))."
    )
    assert Logic.stepsEstimate(_panel()) == ""  # unset path: "." is no model
    broken = Logic.stepsEstimate(_panel(modelPath=tmp_path))
    assert broken.startswith("Steps: unknown (") and "model.json" in broken


def test_steps_line_needs_no_torch() -> None:
    """The panel refreshes the line on every parameter change, before PyTorch is installed."""
    code = (
        "import sys, tempfile, json, pathlib\n"
        "from types import SimpleNamespace\n"
        "from ipv2.slicer.denoise_logic import DenoiseLogicMixin as L\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "(d / 'model.json').write_text(json.dumps({'format': 'ipv2-model', 'scheme': "
        "{'name': 'flow', 'params': {'steps': 10}}, 'steps_curve': [{'steps': 1, "
        "'rmse_hu': 5.0, 'seconds_per_slice': 0.1}]}))\n"
        "print(L.stepsEstimate(SimpleNamespace(modelPath=d, steps=0, uldctVolume=None)))\n"
        "print('torch' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line, loaded = out.stdout.strip().splitlines()
    assert line.startswith("Steps: 1 step (auto:") and "100 ms per slice" in line
    assert loaded == "False False"


# -- the change-map checkbox ---------------------------------------------------------------


def _composites(scene, backgrounds: list[Any]) -> list[Any]:  # type: ignore[no-untyped-def]
    views = []
    for node in backgrounds:
        comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        comp.SetBackgroundVolumeID(node.GetID())
        views.append(comp)
    return views


def test_change_map_checkbox_shows_hides_and_reuses_the_overlay(scene, case) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.change_map_step import LABELS_REFERENCE
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin as Logic
    from ipv2.slicer.dicom_export import SOURCE_REFERENCE

    source = node_from_volume(case.uldct, "chest", scene)
    other = node_from_volume(case.ndct, "NDCT", scene)
    smooth = np.asarray(ndimage.median_filter(case.uldct.array, size=(1, 3, 3)), np.float32)
    denoised = node_from_volume(case.uldct.with_array(smooth), "chest IPv2 denoised", scene)
    denoised.SetNodeReferenceID(SOURCE_REFERENCE, source.GetID())  # as fileDenoised records
    red, yellow, green = _composites(scene, [source, other, denoised])  # the compare layout
    # The panel's uLDCT selector has moved on to another volume: the map still compares
    # the result with the volume it was denoised from.
    p = _panel(uldctVolume=other, denoisedVolume=denoised, changeMap=True)
    summary = Logic.showChangeMap(p, scene=scene)
    assert "of lung voxels changed beyond noise" in summary and "of body voxels" in summary
    labels = denoised.GetNodeReference(LABELS_REFERENCE)
    assert labels is not None and green.GetLabelVolumeID() == labels.GetID()
    # Only the view showing the result gets the overlay; uLDCT and NDCT views stay as they were.
    assert red.GetLabelVolumeID() is None and yellow.GetLabelVolumeID() is None
    assert red.GetBackgroundVolumeID() == source.GetID()
    assert yellow.GetBackgroundVolumeID() == other.GetID()
    count = scene.GetNumberOfNodes()
    assert Logic.showChangeMap(p, False, scene=scene) == ""  # unticked: hidden, kept
    assert green.GetLabelVolumeID() is None and scene.GetNumberOfNodes() == count
    assert Logic.showChangeMap(p, True, scene=scene) == summary  # ticked again: same map
    assert green.GetLabelVolumeID() == labels.GetID() and scene.GetNumberOfNodes() == count


def test_change_map_without_a_result_or_a_source(scene, case) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin as Logic

    assert Logic.showChangeMap(_panel(changeMap=True), scene=scene).startswith("Denoise a volume")
    assert Logic.showChangeMap(_panel(changeMap=False), scene=scene) == ""
    # A result without a source reference (e.g. loaded from a file) compares with the uLDCT.
    source = node_from_volume(case.uldct, "chest", scene)
    denoised = node_from_volume(case.uldct, "chest copy", scene)
    (view,) = _composites(scene, [source])  # no view shows the result: it becomes background
    summary = Logic.showChangeMap(
        _panel(uldctVolume=source, denoisedVolume=denoised, changeMap=True), scene=scene
    )
    assert "0% of lung voxels changed beyond noise (0 of" in summary  # identical volumes
    assert view.GetBackgroundVolumeID() == denoised.GetID() and view.GetLabelVolumeID()


def test_no_change_map_once_the_denoised_source_has_left_the_scene(scene, case) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.change_map_step import LABELS_REFERENCE
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin as Logic
    from ipv2.slicer.dicom_export import SOURCE_REFERENCE, record_derivation

    other = node_from_volume(case.ndct, "another scan", scene)  # selected meanwhile
    for removed_before_the_result_loads in (True, False):
        source = node_from_volume(case.uldct, "chest", scene)
        denoised = node_from_volume(case.uldct, "chest IPv2 denoised", scene)
        if removed_before_the_result_loads:  # the reference then names a missing node
            scene.RemoveNode(source)
        record_derivation(denoised, model="m", arch="ffm", steps=1)  # as fileDenoised does
        denoised.SetNodeReferenceID(SOURCE_REFERENCE, source.GetID())
        scene.RemoveNode(source)  # after: MRML drops the reference itself
        p = _panel(uldctVolume=other, denoisedVolume=denoised, changeMap=True)
        message = Logic.showChangeMap(p, scene=scene)
        assert "no longer in the scene" in message and repr(denoised.GetName()) in message
        assert denoised.GetNodeReference(LABELS_REFERENCE) is None  # nothing compared


# Concluding a run (node, cancel line or failure): Testing/test_engine_tasks.py.


# -- the module's wiring -------------------------------------------------------------------


def test_panel_has_the_change_map_checkbox_summary_and_steps_line() -> None:
    widgets = ui_widgets(UI)
    assert widgets["changeMapCheckBox"] == "QCheckBox"
    assert widgets["changeMapSummaryLabel"] == "QLabel" and widgets["stepsInfoLabel"] == "QLabel"
    assert ui_bindings(UI)["changeMap"] == "QCheckBox"
    assert parameter_fields(MODULE, "IPv2DenoiseParameterNode")["changeMap"] == "bool"
    tree = ast.parse(MODULE.read_text())
    connects = [
        ast.unparse(c)
        for c in ast.walk(tree)
        if isinstance(c, ast.Call) and ast.unparse(c.func) == "self.ui.changeMapCheckBox.connect"
    ]
    # clicked, not toggled: restoring a saved parameter node must not compute (or install).
    assert connects == [
        "self.ui.changeMapCheckBox.connect('clicked(bool)', self.onChangeMapClicked)"
    ]
    source = MODULE.read_text()
    assert "self.logic.showChangeMap(" in source and "self.logic.stepsEstimate(" in source


def test_panel_order_puts_denoise_before_qa_and_research_settings_in_a_collapsed_box() -> None:
    """Issue 13 (UX): Inputs, Denoise, then Purification QA; the research settings in a
    collapsed Advanced box, so Denoise is reachable without scrolling past them."""
    import xml.etree.ElementTree as ET

    main = ET.parse(UI).getroot().find("widget/layout")
    assert main is not None
    sections = [w for w in main.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    titles = [w.find("property[@name='text']/string").text for w in sections]  # type: ignore[union-attr]
    assert titles == ["Inputs", "Denoise", "Purification QA", "Advanced"]
    inside = {s.get("name"): {c.get("name") for c in s.iter("widget")} for s in sections}
    research = {
        "stepsSpinBox",
        "deviceComboBox",
        "batchSizeSpinBox",
        "halfPrecisionCheckBox",
        "maskVariantComboBox",
        "thresholdSliderWidget",
        "openingRadiusSpinBox",
        "textureMixSliderWidget",
    }
    assert research <= inside["advancedCollapsibleButton"]
    assert {"uldctSelector", "modelPathLineEdit", "outputSelector"} <= inside[
        "inputsCollapsibleButton"
    ]
    assert {"denoiseButton", "cancelButton", "progressBar"} <= inside["denoiseCollapsibleButton"]
    advanced = sections[3].find("property[@name='collapsed']/bool")
    assert advanced is not None and advanced.text == "true"
    output = next(w for w in sections[0].iter("widget") if w.get("name") == "outputSelector")
    none_text = output.find("property[@name='noneDisplay']/string")
    assert none_text is not None and none_text.text == "Create new volume"
    assert ui_bindings(UI)["outputVolume"] == "qMRMLNodeComboBox"
    assert parameter_fields(MODULE, "IPv2DenoiseParameterNode")["outputVolume"] == (
        "slicer.vtkMRMLScalarVolumeNode"
    )
