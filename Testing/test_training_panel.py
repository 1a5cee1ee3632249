"""IPv2Train's engine side: source checks, command plans, real training jobs, curves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ipv2.cli import build_parser
from ipv2.io.checkpoints import load_checkpoint
from ipv2.io.volumes import write_volume
from ipv2.phantom import make_phantom
from ipv2.runtime.runs import EventFollower, RunFolder, TrainingRun
from ipv2.slicer.curves import COLUMNS
from ipv2.slicer.selftest import write_phantom_pairs
from ipv2.slicer.train_logic import TrainLogicMixin
from ipv2.slicer.training_plan import (
    DatasetPlan,
    TrainSettings,
    dataset_steps,
    inspect_source,
    launcher,
    train_command,
)
from ipv2.training import latest_checkpoint


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    return write_phantom_pairs(root, ("train", "train", "val", "test"), size=64, slices=3, seed=30)


@pytest.fixture(scope="module")
def dataset(pairs_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe

    out = tmp_path_factory.mktemp("ds") / "ds"
    build_dataset(pairs_csv, out, BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    return out


def test_source_summary_counts_splits_and_flags_problems(pairs_csv: Path, tmp_path: Path) -> None:
    summary = inspect_source(pairs_csv)
    assert summary.usable and summary.counts == {"train": 2, "val": 1, "test": 1}
    assert "4 pairs" in summary.describe()
    bad = tmp_path / "bad.csv"
    other = make_phantom(size=32, slices=3, seed=1)
    write_volume(other.ndct, tmp_path / "small.nrrd")
    bad.write_text(
        f"uldct,ndct\n{pairs_csv.parent / 'u0.nrrd'},{tmp_path / 'small.nrrd'}\n"
        f"{pairs_csv.parent / 'u1.nrrd'},{tmp_path / 'gone.nrrd'}\n"
    )
    summary = inspect_source(bad)
    assert not summary.usable
    assert any("(64, 64, 3)" in w and "(32, 32, 3)" in w for w in summary.warnings)
    assert any("missing" in w for w in summary.warnings)
    assert not inspect_source(tmp_path / "nothing-here").usable


def test_planned_commands_are_accepted_by_the_real_cli() -> None:
    parser = build_parser()
    steps = dataset_steps(DatasetPlan(source="pairs.csv", out_dir="ds", modules=(1, 2, 3)))
    assert [label for label, _ in steps][1] == "Training the weak denoiser (Module 3)"
    for _, command in steps:
        args = parser.parse_args(command)
        assert args.run is not None
    assert (
        "--weak-denoiser" in steps[2][1]
        and steps[2][1][steps[2][1].index("--weak-denoiser") + 1] == "ds-weak-denoiser/final"
    )
    assert (
        len(dataset_steps(DatasetPlan(source="s", out_dir="d", strategy="ipv1", modules=()))) == 1
    )
    settings = TrainSettings(data="ds", output="run", model="redcnn", base=16, crop=32, gpus=1)
    assert parser.parse_args(train_command(settings)).model == "redcnn"
    assert parser.parse_args(train_command(settings, resume=True)).resume
    assert launcher(1) == [] and launcher(4)[-1] == "4"


def _panel(dataset: Path, output: Path, **extra):  # type: ignore[no-untyped-def]
    values = dict(
        datasetFolder=str(dataset),
        outputFolder=str(output),
        architecture="redcnn",
        epochs=500,
        batchSize=2,
        learningRate=1e-3,
        cropSize=32,
        device="cpu",
        gpus=1,
        baseChannels=16,
        samplerSteps=0,
        maxSteps=0,
    )
    values.update(extra)
    return SimpleNamespace(**values)


def _wait(run: TrainingRun, predicate, timeout: float = 120.0) -> list[dict]:  # type: ignore[no-untyped-def]
    seen: list[dict] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen += run.poll()
        if predicate(seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"timed out; events: {seen[-5:]}")


@pytest.mark.slow
def test_live_run_stop_resume_kill_and_reattach(scene, dataset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    logic = TrainLogicMixin()
    out = tmp_path / "run"
    p = _panel(dataset, out)
    run = logic.startTraining(p)
    curve = logic.curveFor(run, scene=scene)
    events = _wait(run, lambda ev: any(e.get("event") == "checkpoint" for e in ev))
    assert RunFolder(out).process()["pid"] == run.pid
    assert RunFolder(out).running_pid() == run.pid
    curve.add(events)
    assert curve.table.GetTable().GetNumberOfColumns() == 5
    run.stop()  # graceful: finishes the step, checkpoints, done/stopped
    events += _wait(run, lambda ev: any(e.get("event") == "done" for e in ev))
    run.job.wait(timeout=60)
    curve.add(events)
    assert run.result is not None and run.result["status"] == "stopped"
    stopped_step = int(run.result["step"])
    stopped = latest_checkpoint(out)
    assert stopped is not None and load_checkpoint(stopped).meta["step"] == stopped_step
    # ... and ipv2 denoise can use it.
    source = write_volume(make_phantom(size=32, slices=1, seed=9).uldct, tmp_path / "u.nrrd")
    denoise = subprocess.run(
        [
            sys.executable,
            "-m",
            "ipv2",
            "denoise",
            "--input",
            str(source),
            "--model",
            str(stopped),
            "--out",
            str(tmp_path / "d.nrrd"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert denoise.returncode == 0, denoise.stderr
    assert logic.modelToUse(run) is not None
    losses = [r for r in curve.rows() if not np.isnan(r["loss"])]
    assert losses and all(r["step"] <= stopped_step for r in losses)

    # Resume continues the step count, then a kill leaves the last checkpoint intact.
    resumed = logic.startTraining(p, resume=True)
    more = _wait(
        resumed,
        lambda ev: any(e.get("event") == "checkpoint" and e.get("role") == "periodic" for e in ev),
    )
    steps = [e["step"] for e in more if e.get("event") == "metric" and e.get("name") == "loss"]
    assert steps and min(steps) > stopped_step
    resumed.kill()
    resumed.job.wait(timeout=30)
    survivor = latest_checkpoint(out)
    assert survivor is not None and load_checkpoint(survivor).meta["step"] > stopped_step

    # Re-attaching replays the same curve from events.jsonl.
    again = logic.reattach(str(out))
    assert not again.running
    replay = logic.curveFor(again, name="replay", scene=scene)
    live = logic.curveFor(TrainingRun(RunFolder(out), pid=None), name="live", scene=scene)

    def table(curve):  # type: ignore[no-untyped-def]
        return np.array([[row[c] for c in COLUMNS] for row in curve.rows()])

    np.testing.assert_array_equal(table(replay), table(live))
    assert len(replay.rows()) >= len(losses)


def test_event_follower_never_returns_half_a_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    follower = EventFollower(path)
    assert follower.poll() == []
    path.write_text('{"event": "metric", "name": "loss", "value": 1.0, "step": 1}\n{"event": "met')
    assert [e["step"] for e in follower.poll()] == [1]
    with path.open("a") as fh:
        fh.write('ric", "name": "loss", "value": 0.5, "step": 2}\n')
    assert [e["step"] for e in follower.poll()] == [2]
    assert follower.poll() == []


def test_scene_pairs_are_exported_as_a_manifest(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import InputError
    from ipv2.slicer import node_from_volume

    case = make_phantom(size=32, slices=2, seed=3)
    u = node_from_volume(case.uldct, "u", scene)
    n = node_from_volume(case.ndct, "n", scene)
    manifest = TrainLogicMixin.exportScenePairs([(u, n)], str(tmp_path / "export"))
    assert inspect_source(manifest).counts == {"train": 1, "val": 0, "test": 0}
    small = node_from_volume(make_phantom(size=64, slices=2, seed=3).ndct, "big", scene)
    with pytest.raises(InputError, match="shape"):
        TrainLogicMixin.exportScenePairs([(u, small)], str(tmp_path / "bad"))


def test_dataset_description_and_unset_paths(dataset: Path, tmp_path: Path) -> None:
    from pathlib import PurePath

    text = TrainLogicMixin.describeDataset(dataset)
    assert text.startswith("Dataset ready: 4 cases (train 2, val 1, test 1)")
    assert "input" in text and "ndct" in text
    assert TrainLogicMixin.describeDataset(tmp_path).startswith("Dataset not usable")
    # An unset pathlib.Path parameter reads as '.', which must mean "not chosen".
    assert not TrainLogicMixin.inspectSource(PurePath("")).usable
    with pytest.raises(Exception, match="output folder"):
        TrainLogicMixin.reattach(PurePath(""))


@pytest.mark.slow
def test_planned_dataset_build_with_module_3_runs_as_jobs(pairs_csv: Path, tmp_path: Path) -> None:
    """The panel's three jobs: sim(N) dataset, weak denoiser, dataset with IPv2 labels."""
    out = tmp_path / "ds"
    plan = DatasetPlan(
        source=str(pairs_csv),
        out_dir=str(out),
        modules=(1, 2, 3),
        weak_epochs=1,
        weak_crop=32,
        weak_model="redcnn",
        weak_base=8,
        device="cpu",
        match_uldct=False,  # 64 px phantoms are too coarse to measure lung noise
    )
    for label, command in dataset_steps(plan):
        job = TrainLogicMixin.startCommand(command)
        assert job.wait(timeout=300) == 0, (label, job.log_tail(20))
        events = job.poll()
        done = [e for e in events if e["event"] == "done"]
        assert done and done[-1]["status"] in ("ok", "stopped"), label
        assert all(isinstance(e, dict) and "event" in e for e in events)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"input", "label", "sim", "lung"} <= set(manifest["kinds"])
    assert "weak denoiser" in manifest["parameters"]["weak_denoiser"]
    assert TrainLogicMixin.describeDataset(out).startswith("Dataset ready: 4 cases")


def test_the_datasets_hu_window_travels_into_the_model(pairs_csv: Path, tmp_path: Path) -> None:
    from ipv2.core.hu_window import HUWindow
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe
    from ipv2.training import TrainConfig, train

    window = HUWindow(-1200.0, 600.0)
    build_dataset(
        pairs_csv, tmp_path / "ds", BuildConfig(recipe=Recipe.for_strategy("ipv1"), window=window)
    )
    config = TrainConfig(
        data=str(tmp_path / "ds"),
        output=str(tmp_path / "run"),
        model="redcnn",
        model_params={"width": 8},
        max_steps=1,
        crop=32,
        val_every=0,
        checkpoint_every_steps=1,
        device="cpu",
    )
    train(config)
    found = latest_checkpoint(tmp_path / "run")
    assert found is not None
    assert load_checkpoint(found).window == window
