"""IPv2Denoise: purification preview and FFM denoising of ultra-low-dose lung CT.

A thin Slicer shell: every computation lives in the ``ipv2`` engine and its MRML adapter
(``ipv2.slicer``), which are tested outside Slicer; this file only wires the panel.
"""

import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ipv2.slicer.version_gate import message_panel, unsupported_reason

UNSUPPORTED = unsupported_reason()  # Slicer 5.8 (Python 3.9): one message, not a traceback
if UNSUPPORTED is None:
    from IPv2DenoiseLib.model_selector import ModelSelector

    from ipv2.slicer.denoise_logic import FUSION_LABELS, DenoiseLogicMixin
    from ipv2.slicer.dicom_export import DicomExportMixin
    from ipv2.slicer.layout import show_compare_layout
    from ipv2.slicer.own_outputs import first_input_volume, hide_outputs_from
    from ipv2.slicer.panel_actions import panel_action
    from ipv2.slicer.paths import path_text
    from ipv2.slicer.preview import LivePreview, current_slice
    from ipv2.slicer.selftest_gate import selftest_skip_reason
    from ipv2.slicer.slicer_dialogs import SlicerDialogs

    PANEL_MIXINS = (SlicerDialogs,)
    ENGINE_MIXINS = (DenoiseLogicMixin, DicomExportMixin)
else:
    FUSION_LABELS, ENGINE_MIXINS, PANEL_MIXINS = {"ipv2-input": "IPv2 training input"}, (), ()

    def panel_action(title, **options):
        return lambda method: method


class IPv2Denoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "IPv2 Denoise"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["IPv2 contributors"]
        self.parent.helpText = (
            "Denoises real-world ultra-low-dose (about 2% dose) lung CT with a model trained "
            "under the IPv2 image purification strategy. IPv2 builds training inputs whose "
            "lungs come from a physically simulated low-dose scan and whose background keeps "
            "real low-dose noise, so the network learns to clean lungs and background as well "
            "as chest wall and bone. The panel previews the purification masks and fusions "
            "of a uLDCT/NDCT pair and runs the frequency-domain flow matching (FFM) model in "
            "a background process.<br>Method: Gong and Yu, IPv2: An Improved Image "
            "Purification Strategy for Real-World Ultra-Low-Dose Lung CT Denoising; and "
            "arXiv:2510.07492 (2025)."
        )
        self.parent.acknowledgementText = (
            "Tests and examples use The Cancer Imaging Archive's Lung-PET-CT-Dx collection "
            "(Li P. et al., 2020, doi:10.7937/TCIA.2020.NNC2-0461), CC BY 4.0."
        )


@parameterNodeWrapper
class IPv2DenoiseParameterNode:
    uldctVolume: slicer.vtkMRMLScalarVolumeNode
    ndctVolume: slicer.vtkMRMLScalarVolumeNode
    outputVolume: slicer.vtkMRMLScalarVolumeNode  # None: a new node per run
    denoisedVolume: slicer.vtkMRMLScalarVolumeNode
    modelPath: pathlib.Path
    livePreview: bool = True
    maskVariant: Annotated[str, Choice(["paper", "reference", "anatomical"])] = "paper"
    useFixedThreshold: bool = False
    fixedThreshold: Annotated[float, WithinRange(-1000, 200)] = -400.0
    openingRadius: Annotated[int, WithinRange(0, 10)] = 1
    textureMix: Annotated[float, WithinRange(0.0, 1.0)] = 0.1
    fusionKind: Annotated[str, Choice(list(FUSION_LABELS.values()))] = FUSION_LABELS["ipv2-input"]
    steps: Annotated[int, WithinRange(0, 1000)] = 0  # 0: auto, from the model's steps curve
    device: Annotated[str, Choice(["auto", "cuda", "cpu", "mps"])] = "auto"
    batchSize: Annotated[int, WithinRange(0, 512)] = 0
    halfPrecision: bool = True
    changeMap: bool = False


class IPv2DenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, *PANEL_MIXINS):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._masks = None  # "Masks for all slices"; the live preview has its own node
        self.preview = None
        self._task = None  # the running EngineTask: denoising, purified volumes or a preview
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPollTask)
        self._previewTimer = qt.QTimer()
        self._previewTimer.setSingleShot(True)
        self._previewTimer.setInterval(30)
        self._previewTimer.timeout.connect(self.updateLivePreview)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IPv2Denoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IPv2DenoiseLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.preview = LivePreview(self.checkDependencies)  # observes Red from enter() to exit()

        self.ui.previewFusionButton.connect("clicked(bool)", self.onPreviewFusion)
        self.ui.wholeVolumeMasksButton.connect("clicked(bool)", self.onWholeVolumeMasks)
        self.ui.createFusionVolumesButton.connect("clicked(bool)", self.onCreateFusionVolumes)
        self.ui.denoiseButton.connect("clicked(bool)", self.onDenoise)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.changeMapCheckBox.connect("clicked(bool)", self.onChangeMapClicked)
        self.modelSelector = ModelSelector(self.ui, self.logic, lambda: self._parameterNode)
        self.initializeParameterNode()

    def cleanup(self):
        self.preview.detach()
        self.removeObservers()
        self._timer.stop()
        self._previewTimer.stop()
        self.closeTask()

    def enter(self):
        self.modelSelector.refresh()  # models installed meanwhile (command line, IPv2Train)
        self.initializeParameterNode()
        self.preview.resume()
        red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
        self.preview.attach(red, self.schedulePreview)

    def exit(self):
        self.preview.detach()
        self._previewTimer.stop()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged
            )

    def onSceneStartClose(self, caller, event):
        self.closeTask()  # its nodes are going: ended and discarded, never a failure dialog
        self.setParameterNode(None)

    def closeTask(self):
        if self._task is not None:
            self._task.close()
            self._task = None
            self._timer.stop()
            self.ui.cancelButton.enabled = False

    def onSceneEndClose(self, caller, event):
        self._masks = None
        self.ui.changeMapSummaryLabel.text = ""
        self.preview.forget_nodes()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.uldctVolume:  # a scan, not a label map or IPv2's output
            self._parameterNode.uldctVolume = first_input_volume(slicer.mrmlScene)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged
            )
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged
            )
            self.onParameterChanged()

    def onParameterChanged(self, caller=None, event=None):
        p = self._parameterNode
        keep = [p.uldctVolume, p.ndctVolume] if p else []  # hiding a current one switches it
        hide_outputs_from([self.ui.uldctSelector, self.ui.ndctSelector], slicer.mrmlScene, keep)
        ready = bool(p and p.uldctVolume)
        idle = self._task is None  # one background task at a time
        self.ui.denoiseButton.enabled = ready and bool(path_text(p.modelPath)) and idle
        self.ui.previewFusionButton.enabled = ready and bool(p.ndctVolume) and idle
        self.ui.createFusionVolumesButton.enabled = ready and bool(p.ndctVolume) and idle
        self.ui.wholeVolumeMasksButton.enabled = ready
        self.ui.exportDicomButton.enabled = bool(p and p.denoisedVolume)
        self.ui.thresholdSliderWidget.enabled = bool(p and p.useFixedThreshold)
        self.ui.stepsInfoLabel.text = self.logic.stepsEstimate(p) if p else ""
        self.schedulePreview()

    def schedulePreview(self, caller=None, event=None):
        p = self._parameterNode
        if self.preview.attached and p and p.livePreview and p.uldctVolume:
            self._previewTimer.start()

    def updateLivePreview(self):
        p = self._parameterNode
        if p and p.uldctVolume:
            k = current_slice(p.uldctVolume)
            self.ui.previewStatusLabel.text = self.preview.update(p, k, logic=self.logic)

    # panel_action's protocol: dependencies, busy cursor, one error dialog with details
    def ensureDependencies(self):
        return self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay)

    @panel_action("Installing IPv2's Python packages failed.")
    def checkDependencies(self):
        return self.ensureDependencies()

    @panel_action("Fusion preview failed.", dependencies=True)
    def onPreviewFusion(self):
        p = self._parameterNode
        self.startTask(self.logic.previewFusion(p, current_slice(p.uldctVolume)))

    @panel_action("Mask computation failed.", dependencies=True)
    def onWholeVolumeMasks(self):
        dialog = slicer.util.createProgressDialog(labelText="Masks for all slices...", maximum=100)

        def progress(done, total):
            dialog.value = int(100 * done / total)
            slicer.app.processEvents()

        try:
            self._masks = self.logic.wholeVolumeMasks(self._parameterNode, self._masks, progress)
        finally:
            dialog.close()

    @panel_action("Creating purified volumes failed.", dependencies=True)
    def onCreateFusionVolumes(self):
        self.startTask(self.logic.createFusionVolumes(self._parameterNode))

    @panel_action("Could not start denoising.", dependencies=True)
    def onDenoise(self):
        self.startTask(self.logic.startDenoise(self._parameterNode))
        # Remembered across sessions (QSettings under the .ui's settingKey; CTK
        # Libs/Widgets/ctkPathLineEdit.h: history is saved only on this call).
        self.ui.modelPathLineEdit.addCurrentPathToHistory()
        self.ui.changeMapSummaryLabel.text = ""

    def startTask(self, task):
        self.closeTask()  # one at a time (the buttons are disabled while one runs)
        self._task = task
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.cancelButton.enabled = task.job is not None
        self.onParameterChanged()
        self._timer.start()

    @panel_action("DICOM export failed.")
    def onExportDicom(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Folder for the DICOM series")
        if folder:
            out = self.logic.exportDicom(self._parameterNode, folder)
            self.ui.logTextEdit.appendPlainText(f"DICOM series written to {out}")

    @panel_action("Change map failed.", dependencies=True)
    def onChangeMapClicked(self, checked):  # clicks only (not toggled): a restore computes nothing
        self.ui.changeMapSummaryLabel.text = self.logic.showChangeMap(self._parameterNode, checked)

    def onCancel(self):
        if self._task is not None and self._task.job is not None:
            self.ui.logTextEdit.appendPlainText(self._task.cancel() or "Already ended.")

    @panel_action("Showing the result failed.", busy=False)
    def onPollTask(self):
        task = self._task
        if task is None:
            self._timer.stop()
            return
        view = task.poll()  # the state machine: ipv2.slicer.engine_task
        for line in view.log:
            self.ui.logTextEdit.appendPlainText(line)
        self.ui.progressBar.value = int(100 * view.fraction)
        self.ui.timeLabel.text = view.status  # purification tasks: also under their buttons
        if task.kind != "denoise":  # denoising leaves the live preview's line alone
            self.ui.previewStatusLabel.text = view.status
        if view.outcome is None:
            return
        self.closeTask()  # it has ended: this only lets go of it
        self.onParameterChanged()
        outcome = view.outcome
        if outcome.node is None:  # cancelled: a log line; failed: a dialog with the details
            self.ui.logTextEdit.appendPlainText(outcome.message)
            if outcome.failed:
                slicer.util.errorDisplay(outcome.message, detailedText=outcome.details)
            return
        sources = task.sources  # what it was started from: the selection may have changed
        if task.kind == "volumes":  # its warnings are already in the log (ipv2 purify)
            self.logic.showCompare(sources, outcome.node.get("training_input"))
            return
        if task.kind == "denoise":  # a None background would blank every view (Slicer's
            # Base/Python/slicer/util.py setSliceViewerLayers: only "keep-current" keeps it)
            layers = {"background": sources[0] or "keep-current", "foregroundOpacity": 0}
            slicer.util.setSliceViewerLayers(foreground=outcome.node, **layers)
        self.logic.showCompare(sources, outcome.node)
        if task.kind == "denoise" and self._parameterNode.changeMap:
            self.onChangeMapClicked(True)


class IPv2DenoiseLogic(ScriptedLoadableModuleLogic, *ENGINE_MIXINS):
    """Usable from the Python console; the node workflows live in ipv2.slicer.denoise_logic."""

    def getParameterNode(self):
        return IPv2DenoiseParameterNode(super().getParameterNode())

    def showCompare(self, sources, third):
        """The (uLDCT, NDCT) pair and a third volume side by side: axial, linked, lung window."""
        show_compare_layout()  # sets each view axial: the layout XML cannot (see layout.py)
        layoutManager = slicer.app.layoutManager()
        views = {"Red": sources[0], "Yellow": sources[1] or sources[0], "Green": third}
        for name, node in views.items():
            self.showInLungWindow(node)
            if layoutManager is not None:  # None without a main window (build servers)
                composite = layoutManager.sliceWidget(name).mrmlSliceCompositeNode()
                composite.SetBackgroundVolumeID(node.GetID() if node else None)
                composite.SetLinkedControl(True)


if UNSUPPORTED:  # Slicer looks the panel up by this name
    IPv2DenoiseWidget = message_panel(ScriptedLoadableModuleWidget, qt, UNSUPPORTED)


class IPv2DenoiseTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: phantom volumes, mask preview, a tiny model's denoising."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        reason = UNSUPPORTED or selftest_skip_reason()
        if reason:  # build servers without torch/scikit-image/OpenCV, unless asked to install
            self.delayDisplay(reason)
            self.skipTest(reason)
        self.test_preview_and_denoise()

    def test_preview_and_denoise(self):
        from ipv2.slicer.selftest import denoise_selftest

        logic = IPv2DenoiseLogic()
        denoise_selftest(logic, say=self.delayDisplay, keep_alive=slicer.app.processEvents)
        self.delayDisplay("Test passed")
