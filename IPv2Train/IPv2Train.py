"""IPv2Train: build purified datasets and train IPv2 models in a background process.

A thin Slicer shell over the engine (``ipv2.slicer.training_plan``, ``ipv2.runtime.runs`` and
``ipv2.slicer.train_logic``, tested outside Slicer); training runs as ``ipv2 train`` in a
child process, so Slicer stays responsive and a crash cannot take it down.
"""

import pathlib
import tempfile
from typing import Annotated

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ipv2.slicer.version_gate import unsupported_reason

UNSUPPORTED = unsupported_reason()  # Slicer 5.8 (Python 3.9): one message, not a traceback
if UNSUPPORTED is None:
    from ipv2.slicer.dependencies import install_dependencies
    from ipv2.slicer.panel_actions import panel_action
    from ipv2.slicer.paths import optional_path
    from ipv2.slicer.selftest_gate import selftest_skip_reason
    from ipv2.slicer.train_logic import TrainLogicMixin

    ENGINE_MIXINS = (TrainLogicMixin,)
else:
    ENGINE_MIXINS = ()

    def panel_action(title, **options):
        return lambda method: method


class IPv2Train(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "IPv2 Train"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["IPv2 contributors"]
        self.parent.helpText = (
            "Builds IPv1 or IPv2 purified datasets from paired ultra-low-dose and normal-dose "
            "CT and trains FFM, FM, CoreDiff, Cold Diffusion or RED-CNN on them in a "
            "background process, with a live loss and validation curve. Runs can be stopped "
            "with a checkpoint, resumed, left running when Slicer closes and re-attached "
            "later. Method: Gong and Yu, IPv2, and arXiv:2510.07492 (2025)."
        )
        self.parent.acknowledgementText = (
            "Tests and examples use The Cancer Imaging Archive's Lung-PET-CT-Dx collection "
            "(Li P. et al., 2020, doi:10.7937/TCIA.2020.NNC2-0461), CC BY 4.0."
        )


@parameterNodeWrapper
class IPv2TrainParameterNode:
    dataSource: pathlib.Path
    datasetFolder: pathlib.Path
    strategy: Annotated[str, Choice(["ipv2", "ipv1"])] = "ipv2"
    module1: bool = True
    module2: bool = True
    module3: bool = True
    textureMix: Annotated[float, WithinRange(0.0, 1.0)] = 0.1
    maskVariant: Annotated[str, Choice(["paper", "reference", "anatomical"])] = "paper"
    simulationDose: Annotated[float, WithinRange(0.001, 1.0)] = 0.02
    matchUldct: bool = True
    architecture: Annotated[str, Choice(["ffm", "unet", "corediff", "colddiff", "redcnn"])] = "ffm"
    baseChannels: Annotated[int, WithinRange(0, 256)] = 0
    samplerSteps: Annotated[int, WithinRange(0, 1000)] = 0
    epochs: Annotated[int, WithinRange(1, 100000)] = 200
    batchSize: Annotated[int, WithinRange(1, 512)] = 2
    learningRate: Annotated[float, WithinRange(1e-6, 0.1)] = 1e-4
    cropSize: Annotated[int, WithinRange(0, 2048)] = 0
    maxSteps: Annotated[int, WithinRange(0, 100000000)] = 0
    device: Annotated[str, Choice(["auto", "cuda", "cpu", "mps"])] = "auto"
    gpus: Annotated[int, WithinRange(1, 64)] = 1
    outputFolder: pathlib.Path


class IPv2TrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pairs = []
        self._steps = []  # dataset build commands still to run
        self._buildJob = None
        self._run = None
        self._curve = None
        self._finishedRun = None
        self._timer = qt.QTimer()
        self._timer.setInterval(500)
        self._timer.timeout.connect(self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IPv2Train.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IPv2TrainLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        slicer.app.connect("aboutToQuit()", self.onAboutToQuit)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.exportPairsButton.connect("clicked(bool)", self.onExportPairs)
        self.ui.dataSourcePathLineEdit.connect("currentPathChanged(QString)", self.onSourceChanged)
        self.ui.buildDatasetButton.connect("clicked(bool)", self.onBuildDataset)
        self.ui.startButton.connect("clicked(bool)", lambda: self.onStart(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onStart(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.reattachButton.connect("clicked(bool)", self.onReattach)
        self.ui.useInDenoiseButton.connect("clicked(bool)", self.onUseInDenoise)
        self.setParameterNode(self.logic.getParameterNode())

    def cleanup(self):
        self.removeObservers()
        self._timer.stop()
        slicer.app.disconnect("aboutToQuit()", self.onAboutToQuit)

    def setParameterNode(self, node):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = node
        if node:
            self._parameterNodeGuiTag = node.connectGui(self.ui)

    def _leaveOrStop(self):
        """Closing while training runs: stop it (with a checkpoint) or leave it running."""
        if self._run is None or not self._run.running:
            return
        stop = slicer.util.confirmYesNoDisplay(
            "A training run is still going. Stop it now (a checkpoint is saved)?\n\n"
            "No leaves it running in the background; re-attach later with Re-attach on its "
            f"output folder:\n{self._run.folder.path}"
        )
        if stop:
            self._run.stop()
        elif self._run.job is not None:
            self._run.job.detach()
        self._run = None

    def onSceneStartClose(self, caller, event):
        self._leaveOrStop()
        self._curve = None

    def onAboutToQuit(self):
        self._leaveOrStop()

    # panel_action's protocol: dependencies, busy cursor, one error dialog with details
    def ensureDependencies(self):
        return install_dependencies(slicer.util.confirmOkCancelDisplay)

    def busy(self):
        return slicer.util.WaitCursor()  # Slicer >= 5.8 Base/Python/slicer/util.py

    def showError(self, text, details):
        slicer.util.errorDisplay(text, detailedText=details)  # traceback, pip's output

    # -- data ----------------------------------------------------------------------

    def onSourceChanged(self, path):
        if optional_path(path) is None:  # unset reads back as "." during setup: nothing to read
            self.ui.sourceSummaryLabel.text = "Choose a pairs.csv, a folder of pairs or a PNG set."
        else:
            self.inspectSource(path)

    @panel_action("Could not read the source.", dependencies=True)
    def inspectSource(self, path):
        self.ui.sourceSummaryLabel.text = self.logic.inspectSource(path).describe()

    def onAddPair(self):
        u, n = self.ui.pairUldctSelector.currentNode(), self.ui.pairNdctSelector.currentNode()
        if u and n:
            self._pairs.append((u, n))
            self.ui.scenePairsListWidget.addItem(f"{u.GetName()}  /  {n.GetName()}")

    @panel_action("Exporting the scene pairs failed.", dependencies=True)
    def onExportPairs(self):
        folder = tempfile.mkdtemp(prefix="ipv2-pairs-")
        manifest = self.logic.exportScenePairs(self._pairs, folder)
        self._parameterNode.dataSource = pathlib.Path(manifest)  # a Path field takes only a Path

    @panel_action("Could not build the dataset.", dependencies=True)
    def onBuildDataset(self):
        self._steps = self.logic.datasetSteps(self._parameterNode)
        if self._steps:
            self._startNextBuildStep()

    def _startNextBuildStep(self):
        label, command = self._steps.pop(0)
        self.ui.buildStatusLabel.text = f"{label}..."
        self.ui.buildProgressBar.value = 0
        self.ui.buildDatasetButton.enabled = False
        self._buildJob = self.logic.startCommand(command)
        self._timer.start()

    def _pollBuild(self):
        job = self._buildJob
        for event in job.poll():
            if event.get("event") in ("log", "error"):
                self.ui.logTextEdit.appendPlainText(str(event.get("message", "")))
        self.ui.buildProgressBar.value = int(100 * job.fraction)
        if job.running:
            return
        self._buildJob = None
        if job.returncode != 0:
            self._steps = []
            self.ui.buildDatasetButton.enabled = True
            self.ui.buildStatusLabel.text = f"Failed: {job.error_message or 'see the log'}"
        elif self._steps:
            self._startNextBuildStep()
        else:
            self.ui.buildDatasetButton.enabled = True
            self.ui.buildStatusLabel.text = self.logic.describeDataset(
                self._parameterNode.datasetFolder
            )

    # -- training ------------------------------------------------------------------

    @panel_action("Could not start training.", dependencies=True)
    def onStart(self, resume):
        self._follow(self.logic.startTraining(self._parameterNode, resume=resume))

    @panel_action("Could not re-attach.")
    def onReattach(self):
        self._follow(self.logic.reattach(self._parameterNode.outputFolder))

    def _follow(self, run):
        self._run = run
        self._curve = self.logic.curveFor(run)
        self.logic.showCurve(self._curve)
        self.ui.logTextEdit.clear()
        self.ui.stopButton.enabled = run.running
        self.ui.stopButton.text = "Stop"
        self.ui.startButton.enabled = self.ui.resumeButton.enabled = not run.running
        self._timer.start()
        self.onPoll()

    def onStop(self):
        if self._run is None:
            return
        if self._run.stop_requested:
            self._run.kill()
            self.ui.trainStatusLabel.text = "Killed; the last checkpoint is kept."
        else:
            self._run.stop()
            self.ui.stopButton.text = "Kill"
            self.ui.trainStatusLabel.text = "Stopping after the current step..."

    def onPoll(self):
        if self._buildJob is not None:
            self._pollBuild()
        run = self._run
        if run is None:
            if self._buildJob is None:
                self._timer.stop()
            return
        events = run.poll()
        self._curve.add(events)
        for event in events:
            if event.get("event") in ("log", "error"):
                self.ui.logTextEdit.appendPlainText(str(event.get("message", "")))
        self.ui.trainProgressBar.value = int(100 * run.fraction)
        self.ui.trainStatusLabel.text = self.logic.statusText(run)
        if run.running:
            return
        self._run = None
        self.ui.stopButton.enabled = False
        self.ui.startButton.enabled = self.ui.resumeButton.enabled = True
        self.ui.useInDenoiseButton.enabled = self.logic.modelToUse(run) is not None
        self._finishedRun = run

    @panel_action("Installing the model failed.")
    def onUseInDenoise(self):
        model = self.logic.installTrainedModel(self._finishedRun)  # into the model store
        denoise = slicer.modules.ipv2denoise.widgetRepresentation().self()
        denoise.modelSelector.refresh()
        denoise.logic.getParameterNode().modelPath = pathlib.Path(model.path)
        slicer.util.selectModule("IPv2Denoise")


class IPv2TrainUnsupportedWidget(ScriptedLoadableModuleWidget):
    """The panel on Slicer older than 5.10 (Python < 3.10): one message, no traceback."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        label = qt.QLabel(UNSUPPORTED)
        label.wordWrap = True
        self.layout.addWidget(label)


if UNSUPPORTED:
    IPv2TrainWidget = IPv2TrainUnsupportedWidget  # Slicer looks the panel up by this name


class IPv2TrainLogic(ScriptedLoadableModuleLogic, *ENGINE_MIXINS):
    """Usable from the Python console; the workflows live in ipv2.slicer.train_logic."""

    def getParameterNode(self):
        return IPv2TrainParameterNode(super().getParameterNode())

    @staticmethod
    def statusText(run):
        p = run.last_progress or {}
        state = "running" if run.running else (run.result or {}).get("status", "ended")
        return (
            f"{state}: step {p.get('done', 0)} of {p.get('total', '?')}, epoch {p.get('epoch', 0)}"
        )

    @staticmethod
    def showCurve(curve):
        """Loss and validation curves in the layout's plot view."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (build-server self-tests)
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView)
        plotWidget = layoutManager.plotWidget(0)
        plotWidget.mrmlPlotViewNode().SetPlotChartNodeID(curve.chart.GetID())


class IPv2TrainTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: phantom dataset, a two-step training, curve and checkpoint."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        reason = UNSUPPORTED or selftest_skip_reason()
        if reason:  # build servers without torch/scikit-image/OpenCV, unless asked to install
            self.delayDisplay(reason)
            self.skipTest(reason)
        self.test_two_step_training()

    def test_two_step_training(self):
        from ipv2.slicer.selftest import train_selftest

        logic = IPv2TrainLogic()
        train_selftest(logic, say=self.delayDisplay, keep_alive=slicer.app.processEvents)
        self.delayDisplay("Test passed")
