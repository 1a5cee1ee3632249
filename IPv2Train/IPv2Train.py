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

from ipv2.slicer.version_gate import message_panel, unsupported_reason

UNSUPPORTED = unsupported_reason()  # Slicer 5.8 (Python 3.9): one message, not a traceback
if UNSUPPORTED is None:
    from ipv2.slicer.dependencies import install_dependencies
    from ipv2.slicer.panel_actions import panel_action
    from ipv2.slicer.paths import optional_path
    from ipv2.slicer.selftest_gate import selftest_skip_reason
    from ipv2.slicer.slicer_dialogs import SlicerDialogs
    from ipv2.slicer.train_logic import TrainLogicMixin

    PANEL_MIXINS = (SlicerDialogs,)
    ENGINE_MIXINS = (TrainLogicMixin,)
else:
    ENGINE_MIXINS = PANEL_MIXINS = ()

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


class IPv2TrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, *PANEL_MIXINS):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pairs = []
        self._build = None  # the dataset build's StepQueue (ipv2.slicer.background_step)
        self._watch = None  # the followed run's RunWatch (ipv2.slicer.run_watch)
        self._finishedRun = None
        self._fast = None  # the last "Make a fast model" BackgroundStep, running or ended
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
        self.ui.buildCancelButton.connect("clicked(bool)", self.onCancelBuild)
        self.ui.startButton.connect("clicked(bool)", lambda: self.onStart(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onStart(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.reattachButton.connect("clicked(bool)", self.onReattach)
        self.ui.useInDenoiseButton.connect("clicked(bool)", self.onUseInDenoise)
        self.ui.fastModelButton.connect("clicked(bool)", self.onMakeFastModel)
        self.ui.fastModelStopButton.connect("clicked(bool)", self.onStopFastModel)
        self.ui.useFastModelButton.connect("clicked(bool)", self.onUseFastModel)
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

    def _leaveOrStop(self, quitting=False):
        """A build goes on unless Slicer quits; a fast model stops (Resume continues it);
        training stops with a checkpoint or goes on, as the user says."""
        if self._build is not None and quitting:
            self._build.close(stop=True)
        if self._fast is not None:
            self._fast.close(stop=True)
        if self._watch is None or not self._watch.run.running:
            return
        run, self._watch = self._watch.run, None
        self._runControls(running=False)  # left running or stopping: Re-attach follows it
        if slicer.util.confirmYesNoDisplay(self.logic.leavePrompt(run)):
            run.stop()
        elif run.job is not None:
            run.job.detach()

    def onSceneStartClose(self, caller, event):
        self._leaveOrStop()

    def onAboutToQuit(self):
        self._leaveOrStop(quitting=True)

    # panel_action's protocol: dependencies, busy cursor, one error dialog with details
    def ensureDependencies(self):
        return install_dependencies(slicer.util.confirmOkCancelDisplay)

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
        self._build = self.logic.startDatasetBuild(self._parameterNode)
        self.ui.buildDatasetButton.enabled = False
        self.ui.buildCancelButton.enabled = True
        self._timer.start()
        self.onPoll()  # labels and status at once, not half a second later

    @panel_action("Could not cancel the build.")
    def onCancelBuild(self):
        if self._build is not None:
            self.ui.buildStatusLabel.text = self._build.cancel()

    def _show(self, view, bar, label, button=None):
        """One poll's view (ipv2.slicer.background_step.StepView) in the panel's widgets."""
        for line in view.log:
            self.ui.logTextEdit.appendPlainText(line)
        bar.value = int(100 * view.fraction)
        label.text = view.status
        if button is not None:
            button.text = view.stop_label
        return view.finished

    def _pollBuild(self):
        ui, view = self.ui, self._build.poll()  # state machine: background_step.StepQueue
        if not self._show(view, ui.buildProgressBar, ui.buildStatusLabel, ui.buildCancelButton):
            return
        build, self._build = self._build, None
        ui.buildDatasetButton.enabled, ui.buildCancelButton.enabled = True, False
        if build.completed:  # the folder it built, whatever the panel's field says now
            self.ui.buildStatusLabel.text = self.logic.describeDataset(build.folder)

    # -- training ------------------------------------------------------------------

    @panel_action("Could not start training.", dependencies=True)
    def onStart(self, resume):
        self._follow(self.logic.startTraining(self._parameterNode, resume=resume))

    @panel_action("Could not re-attach.")
    def onReattach(self):
        self._follow(self.logic.reattach(self._parameterNode.outputFolder))

    def _follow(self, run):
        self._watch = self.logic.watch(run)
        self.logic.showCurve(self._watch.curve)
        self.ui.logTextEdit.clear()
        self._runControls(running=run.running)
        self._timer.start()
        self.onPoll()

    def onStop(self):
        if self._watch is not None:
            self.ui.trainStatusLabel.text, self.ui.stopButton.text = self._watch.stop()

    def onPoll(self):
        if self._build is not None:
            self._pollBuild()
        if self._fast is not None and not self._fast.ended:
            self._pollFastModel()
        if self._watch is not None:
            self._pollRun()
        if self._build is None and (self._fast is None or self._fast.ended) and self._watch is None:
            self._timer.stop()

    def _pollRun(self):
        ui = self.ui  # the state machine: ipv2.slicer.run_watch
        if not self._show(self._watch.poll(), ui.trainProgressBar, ui.trainStatusLabel):
            return
        run, self._watch = self._watch.run, None
        self._runControls(running=False)
        self._finishedRun, usable = run, self.logic.modelToUse(run) is not None
        self.ui.useInDenoiseButton.enabled = usable
        if self._fast is None or self._fast.ended:  # a new teacher: a new student
            self._fast = None
            self.ui.fastModelButton.text = "Make a fast model"
            self.ui.fastModelButton.enabled, self.ui.useFastModelButton.enabled = usable, False

    def _runControls(self, running):
        self.ui.stopButton.enabled = running
        self.ui.stopButton.text = "Stop"
        self.ui.startButton.enabled = self.ui.resumeButton.enabled = not running

    @panel_action("Installing the model failed.")
    def onUseInDenoise(self):
        self._selectInDenoise(self.logic.installTrainedModel(self._finishedRun))

    # -- fast model (ipv2 distill) -------------------------------------------------------

    @panel_action("Could not start the fast model.", dependencies=True)
    def onMakeFastModel(self):
        previous = self._fast.folder if self._fast else None  # continued if it stopped
        self._fast = self.logic.startFastModel(
            self._parameterNode, self._finishedRun, previous=previous
        )
        self.ui.fastModelButton.enabled = self.ui.useFastModelButton.enabled = False
        self.ui.fastModelStopButton.enabled = True
        self._timer.start()
        self.onPoll()

    @panel_action("Could not stop the fast model.")
    def onStopFastModel(self):
        if self._fast is not None:
            self.ui.fastModelStatusLabel.text = self._fast.stop()

    def _pollFastModel(self):
        ui, view = self.ui, self._fast.poll()  # the state machine: ipv2.slicer.background_step
        if not self._show(
            view, ui.fastModelProgressBar, ui.fastModelStatusLabel, ui.fastModelStopButton
        ):
            return
        student = self.logic.fastModel(self._fast)
        ui.fastModelStopButton.enabled = False
        ui.useFastModelButton.enabled = student is not None
        ui.fastModelButton.enabled = True
        ui.fastModelButton.text = "Make a fast model" if student else "Resume the fast model"
        if view.failed:
            self.showError(view.status, "\n".join(self._fast.job.log_tail(50)))

    @panel_action("Installing the fast model failed.")
    def onUseFastModel(self):
        self._selectInDenoise(self.logic.installFastModel(self._fast))

    def _selectInDenoise(self, model):
        denoise = slicer.modules.ipv2denoise.widgetRepresentation().self()
        denoise.modelSelector.refresh()
        denoise.logic.getParameterNode().modelPath = pathlib.Path(model.path)
        slicer.util.selectModule("IPv2Denoise")


if UNSUPPORTED:  # Slicer looks the panel up by this name
    IPv2TrainWidget = message_panel(ScriptedLoadableModuleWidget, qt, UNSUPPORTED)


class IPv2TrainLogic(ScriptedLoadableModuleLogic, *ENGINE_MIXINS):
    """Usable from the Python console; the workflows live in ipv2.slicer.train_logic."""

    def getParameterNode(self):
        return IPv2TrainParameterNode(super().getParameterNode())

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
