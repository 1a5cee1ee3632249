"""IPv2Train's "Make a fast model" step and the panels' background-step controller.

Real ``ipv2 distill`` and ``ipv2 train`` child processes, driven through the Qt-free
:class:`ipv2.slicer.background_step.BackgroundStep` the module file only wires to
widgets: a run's model distilled into a one-step student and installed, Stop that stops
and then kills, and an engine error reported as a failure while a user's stop never is.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from factories import follow, tiny_training_run

from ipv2.core.errors import InputError
from ipv2.runtime.jobs import Job
from ipv2.runtime.runs import RunFolder, TrainingRun
from ipv2.slicer.background_step import BackgroundStep
from ipv2.slicer.fast_model import new_sibling, plan_fast_model, student_of
from ipv2.slicer.train_logic import TrainLogicMixin


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FFM trained to the end (final/) on a phantom dataset with a validation split."""
    run = tiny_training_run(
        tmp_path_factory.mktemp("fast"), seed=4, epochs=1, scheme_params={"steps": 2}
    )
    assert (run / "final" / "model.json").is_file()
    return run


def panel(**extra: object) -> SimpleNamespace:
    values: dict[str, object] = dict(
        device="cpu", epochs=1, batchSize=2, learningRate=1e-3, cropSize=32
    )
    values.update(extra)
    return SimpleNamespace(**values)


def engine(*command: str) -> Job:
    return Job.engine(list(command), python=sys.executable)


def test_plan_reads_the_runs_own_dataset_and_never_reuses_a_folder(
    finished_run: Path, tmp_path: Path
) -> None:
    run = TrainingRun(RunFolder(finished_run), pid=0)
    plan = plan_fast_model(finished_run, TrainLogicMixin.modelToUse(run), device="cpu", crop=32)
    assert plan.teacher == finished_run / "final"
    assert plan.data == finished_run.parent / "ds"
    assert plan.out == finished_run.parent / "run-fast"
    command = plan.command()
    assert command[:1] == ["distill"] and command[command.index("--base") + 1] == "16"
    assert command[command.index("--steps") + 1] == "1"
    from ipv2.cli import build_parser

    assert build_parser().parse_args(command).run is not None  # the real CLI accepts it
    (tmp_path / "r-fast").mkdir()
    (tmp_path / "r-fast-2").mkdir()
    assert new_sibling(tmp_path / "r") == tmp_path / "r-fast-3"
    with pytest.raises(InputError, match="no finished model"):
        plan_fast_model(finished_run, None)
    with pytest.raises(InputError, match="not a training run folder"):
        plan_fast_model(tmp_path, tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    config = json.loads((finished_run / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "gone")}))
    with pytest.raises(InputError, match="is gone"):
        plan_fast_model(moved, finished_run / "final")
    assert student_of({"status": "stopped", "student": str(finished_run / "final")}) is None


@pytest.mark.slow
def test_make_a_fast_model_distils_the_run_and_installs_the_student(
    finished_run: Path, tmp_path: Path, started: list[BackgroundStep]
) -> None:
    logic = TrainLogicMixin()
    run = TrainingRun(RunFolder(finished_run), pid=0)
    step = logic.startFastModel(panel(), run, python=sys.executable)
    started.append(step)
    out = step.folder
    assert out == finished_run.parent / "run-fast" and step.running
    views = follow(step)
    end = views[-1]
    assert end.finished and not end.failed, end.status
    assert "finished" in end.status and any("distilled" in line for v in views for line in v.log)
    assert step.poll().finished is False  # the end is reported once
    student = logic.fastModel(step)
    assert student == out / "student" / "final"
    meta = json.loads((student / "model.json").read_text())
    assert meta["role"] == "student" and meta["scheme"]["params"]["steps"] == 1
    installed = logic.installFastModel(step, str(tmp_path / "store"))
    assert (Path(installed.path) / "model.json").is_file()


@pytest.fixture
def started() -> Iterator[list[BackgroundStep]]:
    """Steps a test starts; whatever still runs when it ends (a failed assertion
    included) is killed, so no 5000-epoch distillation outlives its test."""
    steps: list[BackgroundStep] = []
    yield steps
    for step in steps:
        if step.running:
            step.job.kill()
            step.job.wait(timeout=30)


def long_distill(run: Path, out: Path, started: list[BackgroundStep]) -> BackgroundStep:
    command = ["distill", "--teacher", str(run / "final"), "--data", str(run.parent / "ds")]
    command += ["--out", str(out), "--epochs", "5000", "--crop", "32", "--device", "cpu"]
    step = BackgroundStep.start("Fast model", lambda: engine(*command))
    started.append(step)
    return step


def wait_for_training(step: BackgroundStep) -> None:
    end = time.monotonic() + 600  # generous: a loaded CI machine runs the teacher slowly
    while time.monotonic() < end:
        step.poll()
        progress = step.job.last_progress or {}
        if progress.get("stage") == "train" and int(progress.get("done", 0)) > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the student never started training")


@pytest.mark.slow
def test_stop_stops_then_kills_and_neither_is_a_failure(
    finished_run: Path, tmp_path: Path, started: list[BackgroundStep]
) -> None:
    polite = long_distill(finished_run, tmp_path / "a", started)
    wait_for_training(polite)
    assert "stopping" in polite.stop()
    assert polite.poll().stop_label == "Kill"
    end = follow(polite)[-1]
    assert end.finished and not end.failed and "stopped; resume" in end.status
    assert end.result is not None and end.result["status"] == "stopped"
    # "Resume the fast model" continues that folder rather than starting anew.
    run = TrainingRun(RunFolder(finished_run), pid=0)
    resumed = TrainLogicMixin().startFastModel(
        panel(), run, previous=tmp_path / "a", python=sys.executable
    )
    started.append(resumed)
    assert resumed.folder == tmp_path / "a" and "--resume" in resumed.job.argv
    wait_for_training(resumed)
    resumed.stop()
    assert not follow(resumed)[-1].failed

    forced = long_distill(finished_run, tmp_path / "b", started)
    wait_for_training(forced)
    forced.stop()
    assert forced.stop() == "killed"
    end = follow(forced, timeout=60)[-1]
    assert end.finished and not end.failed and "killed" in end.status


def test_an_engine_error_is_a_failure_with_its_message(tmp_path: Path) -> None:
    step = BackgroundStep.start(
        "Fast model",
        lambda: engine(
            "distill",
            "--teacher",
            str(tmp_path / "none"),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ),
    )
    end = follow(step, timeout=120)[-1]
    assert end.finished and end.failed
    assert "failed" in end.status and "none" in end.status  # the engine's own message


@pytest.mark.slow
def test_closing_the_scene_stops_the_step_without_a_failure(
    finished_run: Path, tmp_path: Path, started: list[BackgroundStep]
) -> None:
    step = long_distill(finished_run, tmp_path / "c", started)
    wait_for_training(step)
    step.close(stop=True)
    end = follow(step)[-1]
    assert end.finished and not end.failed and "stopped" in end.status
    assert end.result is not None and end.result["status"] == "stopped"
