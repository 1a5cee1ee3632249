"""The panels' Qt-free state machines with real child processes (issue 13).

:class:`ipv2.slicer.background_step.StepQueue` (IPv2Train's dataset build: steps in
order, a failure ends the queue, Cancel stops the step and skips the rest),
:class:`ipv2.slicer.background_step.BackgroundStep` (a process killed from outside is a
failure; a user's stop never is) and :class:`ipv2.slicer.run_watch.RunWatch` (a real
``ipv2 train`` run followed into a real MRML curve, Stop then Kill, the end once).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from factories import follow
from test_training_panel import _panel as panel_settings

from ipv2.runtime.jobs import Job
from ipv2.slicer.background_step import BackgroundStep, StepQueue
from ipv2.slicer.selftest import write_phantom_pairs
from ipv2.slicer.train_logic import TrainLogicMixin

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def engine(command: list[str]) -> Job:
    return Job.engine(command, python=sys.executable)


def phantom(out: Path) -> list[str]:
    return ["phantom", "--out", str(out), "--size", "32", "--slices", "2"]


def test_queue_runs_its_steps_in_order_and_completes(tmp_path: Path) -> None:
    steps = [("Phantom A", phantom(tmp_path / "a")), ("Phantom B", phantom(tmp_path / "b"))]
    queue = StepQueue(steps, engine, folder=tmp_path)
    views = follow(queue)
    assert queue.completed and not views[-1].failed and queue.number == 2
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    statuses = [v.status for v in views]
    assert any(s.startswith("Step 1 of 2: Phantom A") for s in statuses)
    assert any(s.startswith("Step 2 of 2: Phantom B") for s in statuses)
    fractions = [v.fraction for v in views]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [v.finished for v in views].count(True) == 1  # the end is reported once


def test_a_failing_step_ends_the_queue(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("the user's file")
    steps = [
        ("First", phantom(tmp_path / "a")),
        ("Second", phantom(tmp_path / "taken")),  # refused: the folder exists
        ("Third", phantom(tmp_path / "c")),
    ]
    queue = StepQueue(steps, engine)
    end = follow(queue)[-1]
    assert end.failed and not queue.completed and not queue.running
    assert queue.number == 2 and "Step 2 of 3" in end.status and "failed" in end.status
    assert not (tmp_path / "c").exists()  # never started
    assert (tmp_path / "taken" / "keep.txt").read_text() == "the user's file"


def test_cancel_stops_the_running_step_and_skips_the_rest(tmp_path: Path) -> None:
    queue = StepQueue(
        [("Long", ["unused"]), ("Next", phantom(tmp_path / "next"))],
        lambda command: Job(SLEEPER) if command == ["unused"] else engine(command),
    )
    assert queue.poll().stop_label == "Cancel"
    try:
        assert "stopping" in queue.cancel()
        end = follow(queue)[-1]
    finally:
        queue.current.job.kill()  # the sleeper, whatever happened
    assert not end.failed and not queue.completed and queue.number == 1
    assert "Step 1 of 2" in end.status and "stopped" in end.status
    assert "resume" not in end.status  # a build step starts over; nothing to resume
    assert not (tmp_path / "next").exists()


def test_quitting_stops_the_build_and_a_scene_close_leaves_it_running(tmp_path: Path) -> None:
    """Issue 13, item 10: the build's queue on application quit (close, stopping) and on
    scene close (IPv2Train lets a build go on: it writes files, not nodes)."""
    quit_queue = StepQueue(
        [("Long", ["unused"]), ("Next", phantom(tmp_path / "next"))],
        lambda command: Job(SLEEPER) if command == ["unused"] else engine(command),
    )
    try:
        quit_queue.close(stop=True)
        end = follow(quit_queue)[-1]
    finally:
        quit_queue.current.job.kill()
    assert end.finished and not end.failed and not quit_queue.completed
    assert quit_queue.cancelled and not (tmp_path / "next").exists()

    detached = BackgroundStep.start("Sleeper", lambda: Job(SLEEPER), resumable=False)
    try:
        detached.close(stop=False)
        time.sleep(1.0)
        assert detached.job.running  # left alone, not stopped
    finally:
        detached.job.kill()
    assert not follow(detached)[-1].failed  # the user's choice, never a failure


def test_ipv2train_stops_the_build_only_when_slicer_quits() -> None:
    """The module's wiring of the policy above (the application cannot run here)."""
    import ast

    module = ast.parse((Path(__file__).resolve().parents[1] / "IPv2Train/IPv2Train.py").read_text())
    methods = {n.name: n for n in ast.walk(module) if isinstance(n, ast.FunctionDef)}
    assert "self._leaveOrStop(quitting=True)" in ast.unparse(methods["onAboutToQuit"])
    assert ast.unparse(methods["onSceneStartClose"]).strip().endswith("self._leaveOrStop()")
    closes = [
        ast.unparse(node.test)
        for node in ast.walk(methods["_leaveOrStop"])
        if isinstance(node, ast.If) and "self._build.close(stop=True)" in ast.unparse(node.body[0])
    ]
    assert closes == ["self._build is not None and quitting"]


def test_a_process_killed_from_outside_is_a_failure(tmp_path: Path) -> None:
    step = BackgroundStep.start("Sleeper", lambda: Job(SLEEPER))
    assert step.job.pid is not None
    os.killpg(step.job.pid, signal.SIGKILL)  # the OS, not the user (and nothing left over)
    end = follow(step)[-1]
    assert end.finished and end.failed and "failed" in end.status


@pytest.mark.slow
def test_run_watch_follows_a_real_training_into_its_curve(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe

    pairs = write_phantom_pairs(tmp_path / "pairs", ("train", "val"), size=32, slices=2)
    build_dataset(pairs, tmp_path / "ds", BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    p = panel_settings(tmp_path / "ds", tmp_path / "run", baseChannels=8)
    logic = TrainLogicMixin()
    run = logic.startTraining(p, python=sys.executable)
    try:
        watch = logic.watch(run, scene=scene)
        end = time.monotonic() + 600
        while watch.poll().fraction == 0.0:
            assert time.monotonic() < end, "training never progressed"
            time.sleep(0.05)
        assert watch.stop() == ("Stopping after the current step...", "Kill")
        views = follow(watch)
    finally:
        if run.running:  # a failed assertion above: no trainer outlives the test
            run.kill()
    assert views[-1].finished and not views[-1].failed
    assert views[-1].result is not None and views[-1].result["status"] == "stopped"
    assert views[-1].status.startswith("stopped: step")
    assert len(watch.curve.rows()) > 0  # the events went into the MRML table
    assert watch.poll().finished is False  # reported once


def test_the_panels_dataset_build_runs_its_plan_and_describes_the_result(tmp_path: Path) -> None:
    """IPv2Train's Build dataset: the planned steps as a StepQueue, and the summary of the
    folder it built (kept by the queue, not re-read from the panel's fields)."""
    from types import SimpleNamespace

    pairs = write_phantom_pairs(tmp_path / "pairs", ("train", "val"), size=32, slices=2)
    p = SimpleNamespace(
        dataSource=str(pairs),
        datasetFolder=str(tmp_path / "ds"),
        strategy="ipv1",
        module1=False,
        module2=False,
        module3=False,
        textureMix=0.1,
        maskVariant="paper",
        simulationDose=0.02,
        matchUldct=False,
        architecture="ffm",
        baseChannels=0,
        device="cpu",
    )
    logic = TrainLogicMixin()
    build = logic.startDatasetBuild(p, python=sys.executable)
    try:
        end = follow(build)[-1]
    finally:
        build.current.job.kill()
    assert build.completed and not end.failed and build.folder == tmp_path / "ds"
    p.datasetFolder = "."  # the field changed (or the scene closed) meanwhile
    assert logic.describeDataset(build.folder).startswith("Dataset ready: 2 cases")
