"""The panel's model selector: installed models, "Choose folder..." and "Install model...".

Only Qt wiring lives here; the choices, installing and the model card come from
``ipv2.slicer.model_picker`` through the module's logic, tested outside Slicer.
"""

import pathlib

import qt
import slicer

from ipv2.core.errors import CancelledError
from ipv2.slicer.model_picker import choice_index, parse_install_text


class ModelSelector:
    """Keeps the combo box, the folder field and the parameter node's ``modelPath`` agreeing."""

    def __init__(self, ui, logic, parameterNode):
        self.ui = ui
        self.logic = logic
        self.parameterNode = parameterNode  # a callable: the panel's node changes with the scene
        self.choices = []
        self.ui.modelSelectorComboBox.connect("activated(int)", self.onActivated)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onPathChanged)
        menu = qt.QMenu(self.ui.installModelButton)
        for text, slot in (
            ("From a model folder...", self.installFromFolder),
            ("From a .zip file...", self.installFromZip),
            ("From a web address (https)...", self.installFromUrl),
        ):
            menu.addAction(text).connect("triggered()", slot)
        self.ui.installModelButton.setMenu(menu)
        self.refresh()

    def refresh(self):
        """Re-read the store (after an install here, in IPv2Train or on the command line)."""
        self.choices = self.logic.modelChoices()
        self.ui.modelSelectorComboBox.clear()
        for choice in self.choices:
            self.ui.modelSelectorComboBox.addItem(choice.label)
        self.sync(self.ui.modelPathLineEdit.currentPath)

    def sync(self, path):
        self.ui.modelSelectorComboBox.currentIndex = choice_index(self.choices, path)

    def onPathChanged(self, path):
        self.ui.modelInfoLabel.text = self.logic.describeModel(path)
        self.sync(path)

    def onActivated(self, index):
        path, p = self.choices[index].path, self.parameterNode()
        if path and p is not None:
            p.modelPath = pathlib.Path(path)
            return
        self.ui.modelPathLineEdit.browse()  # "Choose folder...": any model folder on disk
        self.sync(self.ui.modelPathLineEdit.currentPath)  # shows the store entry if cancelled

    def installFromFolder(self):
        self.install(qt.QFileDialog.getExistingDirectory(None, "Model folder to install"))

    def installFromZip(self):
        self.install(
            qt.QFileDialog.getOpenFileName(None, "Model archive", "", "Zip archives (*.zip)")
        )

    def installFromUrl(self):
        text = qt.QInputDialog.getText(
            None, "Install model", "https:// address of a model .zip (optionally: space, SHA-256):"
        )
        if text:
            self.install(*parse_install_text(text))

    def install(self, source, sha256=None):
        """Install with a progress dialog whose Cancel stops a download (resumable later)."""
        if not source:
            return
        with slicer.util.tryWithErrorDisplay("Installing the model failed."):
            if not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
                return
            dialog = slicer.util.createProgressDialog(labelText=f"Installing {source}", maximum=100)

            def progress(done, total):
                if dialog.wasCanceled:
                    raise CancelledError("cancelled; install the same address again to resume")
                dialog.value = int(100 * done / max(total, 1))
                slicer.app.processEvents()

            try:
                model = self.logic.installModel(source, sha256, progress)
            except CancelledError:
                return  # not an error: a download keeps its part to resume
            finally:
                dialog.close()
            self.refresh()
            self.parameterNode().modelPath = pathlib.Path(model.path)
