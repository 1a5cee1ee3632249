"""The IPv2Denoise module's logic, kept in the engine so it is tested outside Slicer.

The module's ``IPv2DenoiseLogic`` inherits this mixin next to Slicer's
``ScriptedLoadableModuleLogic``; every method takes the module's parameter node ``p``
(any object with the same attribute names works, which is how the tests drive it). Only
what needs the running application (slice views, layouts, dialogs) stays in the module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ipv2.core.errors import IPv2Error
from ipv2.slicer import workflows
from ipv2.slicer.change_map_step import (
    DIFFERENCE_REFERENCE,
    LABELS_REFERENCE,
    update_change_map,
)
from ipv2.slicer.dependencies import check_torch_version, install_dependencies
from ipv2.slicer.engine_task import EngineTask
from ipv2.slicer.model_picker import ModelChoice, describe_model, install_model, model_choices
from ipv2.slicer.nodes import output_name, scene_or_default
from ipv2.slicer.own_outputs import reusable_preview
from ipv2.slicer.paths import optional_path, path_text
from ipv2.slicer.purify_run import discard as discard_purify
from ipv2.slicer.purify_run import load_preview, load_volumes, purify_command, start_purify
from ipv2.slicer.steps_estimate import steps_estimate_text

FUSION_LABELS = {
    "ipv1-input": "IPv1 training input",
    "ipv1-label": "IPv1 label",
    "ipv2-input": "IPv2 training input",
    "ipv2-label": "IPv2 label",
}


def fusion_key(value: str) -> str:
    """The fusion kind from the panel's choice, which shows the readable label."""
    for key, label in FUSION_LABELS.items():
        if value in (key, label):
            return key
    raise IPv2Error(f"unknown fusion {value!r}; choose one of {', '.join(FUSION_LABELS.values())}")


def panel_values(u_node: Any = None, n_node: Any = None, **overrides: Any) -> SimpleNamespace:
    """IPv2DenoiseParameterNode's fields at their defaults, for scripts that drive the
    logic without the panel (the screenshots, tests); a test keeps the names in step."""
    values: dict[str, Any] = dict(
        uldctVolume=u_node,
        ndctVolume=n_node,
        outputVolume=None,
        denoisedVolume=None,
        modelPath=Path(),
        livePreview=True,
        maskVariant="paper",
        useFixedThreshold=False,
        fixedThreshold=-400.0,
        openingRadius=1,
        textureMix=0.1,
        fusionKind=FUSION_LABELS["ipv2-input"],
        steps=0,
        device="auto",
        batchSize=0,
        halfPrecision=True,
        changeMap=False,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def _sources(p: Any) -> tuple[Any, Any]:
    """The pair a task starts from, shown beside its result when it ends."""
    return p.uldctVolume, p.ndctVolume


def _refuse_input_as_output(target: Any, p: Any) -> None:
    """Never write the result over a volume the run reads."""
    if target is not None and target in (p.uldctVolume, p.ndctVolume):
        raise IPv2Error(
            f"the output volume {target.GetName()!r} is an input of this run: choose "
            "another output volume, or 'Create new volume'"
        )


class DenoiseLogicMixin:
    """Node workflows of the panel, parameterised by the panel's parameter node."""

    def ensureDependencies(self, confirm: Callable[[str], bool]) -> bool:
        return install_dependencies(confirm)

    @staticmethod
    def maskOptions(p: Any) -> Any:
        threshold = p.fixedThreshold if p.useFixedThreshold else None
        return workflows.mask_options(p.maskVariant, threshold, p.openingRadius)

    def recipeOptions(self, p: Any) -> dict[str, Any]:
        return {"t": p.textureMix, "masks": self.maskOptions(p)}

    def previewSlice(self, p: Any, k: int, segmentation: Any = None) -> workflows.SlicePreview:
        options = self.maskOptions(p)
        return workflows.preview_slice(
            p.uldctVolume, p.ndctVolume, k, options=options, segmentation=segmentation
        )

    def wholeVolumeMasks(
        self, p: Any, segmentation: Any = None, progress: Callable[[int, int], None] | None = None
    ) -> Any:
        options = self.maskOptions(p)
        return workflows.masks_for_volume(
            p.uldctVolume, p.ndctVolume, options, segmentation=segmentation, progress=progress
        )

    def previewFusion(self, p: Any, k: int, workdir: str | None = None) -> EngineTask:
        """The chosen fusion of slice ``k`` in a reused '<uLDCT> ... preview' node.

        IPv1 fusions are blends of the pair: computed at once, here (a finished task).
        IPv2's need the simulation or the weak denoiser: a background ``ipv2 purify``
        on the one slice, loaded when the panel's poll sees it finish.
        """
        kind = fusion_key(p.fusionKind)
        name = output_name(p.uldctVolume, f"{FUSION_LABELS[kind]} preview")
        strategy, what = kind.split("-")
        weak = path_text(p.modelPath) if kind == "ipv2-label" else None
        if strategy == "ipv1":
            volume = workflows.fusion_slice(
                p.uldctVolume, p.ndctVolume, k, kind=kind, recipe_options=self.recipeOptions(p)
            )
            node = workflows.show_volume(
                volume, name, reusable_preview(scene_or_default(None), name)
            )
            return EngineTask.finished("preview", node, sources=_sources(p))
        if what == "label" and not weak:
            raise IPv2Error(
                "the IPv2 label needs the weak denoiser (Module 3, Remove Noise): choose its "
                "checkpoint folder as the model, or preview the IPv1 label"
            )
        if weak:
            check_torch_version()  # the weak denoiser is a network
        options = purify_command(strategy, self.recipeOptions(p), weak)
        run = start_purify(
            p.uldctVolume, p.ndctVolume, options, strategy=strategy, only=what, k=k, workdir=workdir
        )
        return EngineTask(
            "preview",
            f"{FUSION_LABELS[kind]} preview",
            run.job,
            load=lambda: load_preview(run, name),
            discard=lambda: discard_purify(run),
            sources=_sources(p),
        )

    def createFusionVolumes(self, p: Any, workdir: str | None = None) -> EngineTask:
        """The whole pair purified by ``ipv2 purify`` in the background, loaded as new nodes."""
        kind = fusion_key(p.fusionKind)
        strategy = kind.split("-")[0]
        weak = path_text(p.modelPath) if kind == "ipv2-label" else None
        if weak:
            check_torch_version()  # the weak denoiser is a network
        options = purify_command(strategy, self.recipeOptions(p), weak or None)
        run = start_purify(p.uldctVolume, p.ndctVolume, options, strategy=strategy, workdir=workdir)
        return EngineTask(
            "volumes",
            f"{strategy.upper()} purified volumes",
            run.job,
            load=lambda: load_volumes(run),
            discard=lambda: discard_purify(run),
            sources=_sources(p),
        )

    @staticmethod
    def showInLungWindow(node: Any) -> None:
        workflows.show_in_lung_window(node)

    @staticmethod
    def describeModel(path: Any) -> str:
        """The model card (training data, strategy, window, steps, use, licence, scores).

        Called from the path field's ``currentPathChanged``, which also fires with the
        unset value "." while the panel is set up: that is "no model", never a folder to
        read. A package the card needs but Slicer lacks yet is reported like any other
        missing dependency (it is installed when the user first denoises), not raised.
        """
        chosen = optional_path(path)
        if chosen is None:
            return "No model selected."
        try:
            return describe_model(str(chosen))
        except IPv2Error as exc:
            return f"Not a usable model: {exc}"
        except ImportError as exc:
            missing = exc.name or str(exc)
            return (
                f"The model card needs the Python package {missing!r}, which is not installed "
                "yet; IPv2 offers to install it when you preview or denoise."
            )

    @staticmethod
    def stepsEstimate(p: Any) -> str:
        """The steps the run will take (auto from the model's steps curve unless the Steps
        box says otherwise) and the time the curve predicts for the uLDCT series."""
        return steps_estimate_text(p.modelPath, p.steps, p.uldctVolume)

    @staticmethod
    def showChangeMap(p: Any, enabled: bool | None = None, scene: Any = None) -> str:
        """Show or hide the last result's change map (``enabled`` defaults to
        ``p.changeMap``); its one-line summary for the panel ('' without a panel node)."""
        return update_change_map(p, scene, enabled=enabled) if p is not None else ""

    @staticmethod
    def modelChoices(store: str | None = None) -> list[ModelChoice]:
        """The model selector's entries: the store's models, then "Choose folder..."."""
        return model_choices(store)

    @staticmethod
    def installModel(
        source: str,
        sha256: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Install a folder, .zip or https address into the user's store; the new entry."""
        return install_model(source, sha256=sha256, progress=progress)

    def startDenoise(self, p: Any, workdir: str | None = None) -> EngineTask:
        """``ipv2 denoise`` on the uLDCT in the background; the result goes to the output
        volume chosen in the panel, else to a new node, and is filed under its source."""
        check_torch_version()  # the child process imports it; say what is wrong here
        target = getattr(p, "outputVolume", None)
        _refuse_input_as_output(target, p)
        target_id = target.GetID() if target is not None else None  # looked up again at load
        run = workflows.start_denoise(
            p.uldctVolume,
            path_text(p.modelPath),
            workflows.DenoiseSettings(
                steps=p.steps or None,
                device=p.device,
                batch_size=p.batchSize or None,
                half=p.halfPrecision,
            ),
            workdir=workdir,
        )

        def load() -> Any:
            # The chosen output may have been deleted or made an input meanwhile.
            node = scene_or_default(None).GetNodeByID(target_id) if target_id else None
            _refuse_input_as_output(node, p)
            if node is not None:  # a reused node: its old change map is not this run's,
                node.RemoveNodeReferenceIDs(LABELS_REFERENCE)
                node.RemoveNodeReferenceIDs(DIFFERENCE_REFERENCE)
                # nor are the DICOM instances it was loaded from (Slicer sets this in
                # Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py; never reuse them).
                node.RemoveAttribute("DICOM.instanceUIDs")
            node = workflows.finish_denoise(run, node=node)
            self.fileDenoised(p, node, run)  # type: ignore[attr-defined]  # DicomExportMixin
            return node

        return EngineTask(
            "denoise",
            "Denoising",
            run.job,
            load=load,
            discard=lambda: workflows.discard_denoise(run),
            sources=_sources(p),
        )
