"""The IPv2Train module's logic, kept in the engine so it is tested outside Slicer.

The module's ``IPv2TrainLogic`` inherits this mixin next to Slicer's
``ScriptedLoadableModuleLogic``; every method takes the module's parameter node ``p``
(any object with the same attribute names). Long work runs as child processes
(:class:`ipv2.runtime.jobs.Job`); this class only builds their command lines and follows them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.io.model_store import StoredModel
from ipv2.purification.modules import Module
from ipv2.runtime.jobs import Job
from ipv2.runtime.run_lock import RunFolderBusy, holder_pid
from ipv2.runtime.runs import TrainingRun
from ipv2.slicer.background_step import BackgroundStep, StepQueue
from ipv2.slicer.curves import TrainingCurve
from ipv2.slicer.fast_model import plan_fast_model, resumable, student_of
from ipv2.slicer.model_picker import install_trained
from ipv2.slicer.nodes import volume_from_node
from ipv2.slicer.paths import optional_path, path_text
from ipv2.slicer.run_watch import RunWatch
from ipv2.slicer.training_plan import (
    DatasetPlan,
    SourceSummary,
    TrainSettings,
    dataset_steps,
    inspect_source,
    launcher,
    train_command,
)
from ipv2.slicer.workflows import slicer_python


class TrainLogicMixin:
    """Dataset building and training as Jobs, and the live curve of a run."""

    @staticmethod
    def inspectSource(path: Any) -> SourceSummary:
        """What the chosen source holds; "choose a source" while unset ("" or the
        parameter node's unset "."), without importing the dataset builder's packages."""
        chosen = optional_path(path)
        if chosen is None:
            return SourceSummary(warnings=["choose a source"])
        return inspect_source(chosen)

    @staticmethod
    def exportScenePairs(pairs: Sequence[tuple[Any, Any]], folder: str) -> Path:
        """Write uLDCT/NDCT node pairs as volumes plus a ``pairs.csv`` manifest."""
        from ipv2.io.volumes import write_volume

        if not pairs:
            raise InputError("add at least one uLDCT/NDCT pair from the scene")
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (u_node, n_node) in enumerate(pairs):
            if u_node is None or n_node is None:
                raise InputError(f"pair {i + 1} needs both a uLDCT and an NDCT volume")
            case = f"pair{i:03d}"
            u, n = volume_from_node(u_node), volume_from_node(n_node)
            if diffs := u.grid_differences(n):
                raise InputError(
                    f"pair {i + 1} ({u_node.GetName()} / {n_node.GetName()}): " + "; ".join(diffs)
                )
            write_volume(u, root / f"{case}_uldct.nrrd", overwrite=True)
            write_volume(n, root / f"{case}_ndct.nrrd", overwrite=True)
            rows.append({"case": case, "uldct": f"{case}_uldct.nrrd", "ndct": f"{case}_ndct.nrrd"})
        manifest = root / "pairs.csv"
        with manifest.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["case", "uldct", "ndct"])
            writer.writeheader()
            writer.writerows(rows)
        return manifest

    @staticmethod
    def describeDataset(folder: Any) -> str:
        """'Dataset ready: 4 cases (...)' or what is wrong with the folder."""
        from ipv2.core.errors import IPv2Error
        from ipv2.data.format import read_manifest

        try:
            manifest = read_manifest(path_text(folder))
        except IPv2Error as exc:
            return f"Dataset not usable: {exc}"
        splits = [c.get("split") for c in manifest.get("cases", [])]
        counts = ", ".join(f"{s} {splits.count(s)}" for s in ("train", "val", "test"))
        kinds = ", ".join(manifest.get("kinds", []))
        return f"Dataset ready: {len(splits)} cases ({counts}); kinds {kinds}"

    @staticmethod
    def datasetPlan(p: Any) -> DatasetPlan:
        chosen = (
            (Module.REMOVE_BACKGROUND, p.module1),
            (Module.ADD_NOISE, p.module2),
            (Module.REMOVE_NOISE, p.module3),
        )
        modules = tuple(m for m, on in chosen if on)
        return DatasetPlan(
            source=path_text(p.dataSource),
            out_dir=path_text(p.datasetFolder),
            strategy=p.strategy,
            modules=modules,
            t=p.textureMix,
            mask_variant=p.maskVariant,
            dose=p.simulationDose,
            match_uldct=p.matchUldct,
            weak_model=p.architecture,
            weak_base=p.baseChannels,
            device=p.device,
        )

    def datasetSteps(self, p: Any) -> list[tuple[str, list[str]]]:
        return dataset_steps(self.datasetPlan(p))

    @staticmethod
    def startCommand(command: list[str], python: str | None = None) -> Job:
        return Job.engine(command, python=python or slicer_python()).start()

    def startDatasetBuild(self, p: Any, python: str | None = None) -> StepQueue:
        """The planned build steps (simulation, weak denoiser, dataset) started in order."""
        steps = self.datasetSteps(p)
        if not steps:
            raise InputError("nothing to build: choose a source and a dataset folder")
        exe = python or slicer_python()
        folder = optional_path(p.datasetFolder)
        return StepQueue(steps, lambda command: Job.engine(command, python=exe), folder)

    @staticmethod
    def trainSettings(p: Any) -> TrainSettings:
        return TrainSettings(
            data=path_text(p.datasetFolder),
            output=path_text(p.outputFolder),
            model=p.architecture,
            epochs=p.epochs,
            batch_size=p.batchSize,
            lr=p.learningRate,
            crop=p.cropSize,
            device=p.device,
            gpus=p.gpus,
            base=p.baseChannels,
            steps=p.samplerSteps,
            max_steps=p.maxSteps,
        )

    def startTraining(self, p: Any, resume: bool = False, python: str | None = None) -> TrainingRun:
        settings = self.trainSettings(p)
        if resume and not (Path(settings.output) / "config.json").is_file():
            raise InputError(f"{settings.output} holds no run to resume; start a new training")
        # Refuse at the click, naming the live trainer (its run-folder lock holds its own
        # pid, not a launcher's), rather than start a job that fails a moment later; the
        # trainer still takes the lock itself, so a race between two clicks stays safe.
        busy = holder_pid(settings.output) if Path(settings.output).is_dir() else None
        if busy is not None:
            raise RunFolderBusy(
                f"{settings.output} is still being written by a training process "
                f"(pid {busy if busy > 0 else 'unknown'}); stop it, or wait for it to finish, "
                f"before you {'resume' if resume else 'train'} there"
            )
        job = Job.engine(
            train_command(settings, resume=resume),
            python=python or slicer_python(),
            launcher=launcher(settings.gpus),
        ).start()
        return TrainingRun.start(settings.output, job)

    @staticmethod
    def reattach(folder: Any) -> TrainingRun:
        text = path_text(folder)
        if not text:
            raise InputError("choose the output folder of the run to re-attach to")
        return TrainingRun.reattach(text)

    @staticmethod
    def leavePrompt(run: TrainingRun) -> str:
        """The question asked when the scene closes or Slicer quits while ``run`` trains."""
        return (
            "A training run is still going. Stop it now (a checkpoint is saved)?\n\n"
            "No leaves it running in the background; re-attach later with Re-attach on its "
            f"output folder:\n{run.folder.path}"
        )

    def watch(self, run: TrainingRun, scene: Any = None) -> RunWatch:
        """The panel's view of ``run``: its curve (replayed so far) and its state machine."""
        return RunWatch(run, self.curveFor(run, scene=scene))

    @staticmethod
    def curveFor(run: TrainingRun, name: str | None = None, scene: Any = None) -> TrainingCurve:
        """A new curve holding everything the run logged so far (replayed from its log)."""
        curve = TrainingCurve(name or f"IPv2 training {run.folder.path.name}", scene=scene)
        curve.add(run.folder.events())
        return curve

    @staticmethod
    def modelToUse(run: TrainingRun) -> Path | None:
        return run.folder.model_for_inference()

    def installTrainedModel(self, run: TrainingRun, store: str | None = None) -> StoredModel:
        """Put the run's model into the user's model store (where IPv2Denoise lists it)."""
        model = self.modelToUse(run)
        if model is None:
            raise InputError(f"{run.folder.path} holds no finished model yet")
        return install_trained(model, store)

    def startFastModel(
        self,
        p: Any,
        run: TrainingRun,
        *,
        previous: str | Path | None = None,
        python: str | None = None,
    ) -> BackgroundStep:
        """'Make a fast model': distil the run's model into a one-step student in the
        background, or continue ``previous``, this run's stopped distillation (the
        step's ``folder`` is the distillation's run folder)."""
        if previous is not None and resumable(previous):
            out = Path(previous)
            command = ["distill", "--resume", "--out", str(out), "--device", p.device]
        else:
            plan = plan_fast_model(
                run.folder.path,
                self.modelToUse(run),
                device=p.device,
                epochs=p.epochs,
                batch_size=p.batchSize,
                lr=p.learningRate,
                crop=p.cropSize,
            )
            out, command = plan.out, plan.command()
        exe = python or slicer_python()
        return BackgroundStep.start("Fast model", lambda: Job.engine(command, python=exe), out)

    @staticmethod
    def fastModel(step: BackgroundStep) -> Path | None:
        """The student a finished "Make a fast model" step wrote, if it finished."""
        return student_of(step.job.result)

    @staticmethod
    def installFastModel(step: BackgroundStep, store: str | None = None) -> StoredModel:
        model = student_of(step.job.result)
        if model is None:
            raise InputError("the fast model is not finished yet")
        return install_trained(model, store)
