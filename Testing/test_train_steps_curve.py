"""The steps curve measured at the end of training (issue 14, item 3): a tiny real run
writes it into final/model.json, and ``--steps auto`` then follows it."""

from __future__ import annotations

import math
from pathlib import Path

from test_train import events_of, make_dataset

from ipv2.core.events import Reporter
from ipv2.inference.denoise import sampler_steps
from ipv2.inference.steps_auto import choose_steps, read_curve
from ipv2.io.checkpoints import load_checkpoint, read_metadata
from ipv2.training import TrainConfig, train


def _config(data: Path, output: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = dict(
        data=str(data), output=str(output), model="ffm",
        model_params={"base": 8, "mults": [1, 2]}, scheme_params={"steps": 5}, epochs=2,
        batch_size=2, lr=1e-3, val_limit=2, threads=1, device="cpu",
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_a_finished_run_measures_its_steps_curve(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    result = train(_config(data, run), Reporter())
    assert result["status"] == "ok"
    meta = read_metadata(run / "final")
    curve = meta["steps_curve"]
    assert [p["steps"] for p in curve] == [1, 2, 4, 5]  # 1, 2, 4 and the configured 5
    assert all(math.isfinite(p["rmse_hu"]) and p["rmse_hu"] > 0 for p in curve)
    assert all(p["seconds_per_slice"] > 0 for p in curve)
    parsed, problem = read_curve(meta)
    assert parsed is not None and problem is None
    assert meta["steps_auto"] == choose_steps(parsed.points) == result["steps_auto"]
    assert meta["steps_curve_basis"]["slices"] == 2  # the validation's own slice count
    assert meta["steps_curve_basis"]["slice_shape"] == [32, 32]
    # The last validation sampled the same weights, slices and 5 steps: RMSE >= its MAE.
    assert curve[-1]["rmse_hu"] >= meta["metrics"]["mae_hu"] - 1e-3
    # Only the finished model carries it; best/ was saved mid-run.
    assert "steps_curve" not in read_metadata(run / "best")
    events = events_of(run / "events.jsonl")
    logs = [str(e.get("message")) for e in events if e["event"] == "log"]
    assert any(m.startswith("steps curve (on cpu, 2 validation slices of 32x32") for m in logs)
    stages = {e.get("stage") for e in events if e["event"] == "progress"}
    assert "steps-curve" in stages
    loaded = load_checkpoint(run / "final")
    assert sampler_steps(loaded, "auto").steps == meta["steps_auto"]
    assert sampler_steps(loaded, "auto").how == "auto"


def test_no_curve_without_validation_and_for_one_pass_models(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    train(_config(data, tmp_path / "noval", val_every=0, epochs=1), Reporter())
    assert "steps_curve" not in read_metadata(tmp_path / "noval" / "final")
    logs = [e.get("message") for e in events_of(tmp_path / "noval" / "events.jsonl")]
    assert any(str(m).startswith("steps curve not measured: no validation") for m in logs)
    redcnn = _config(
        data, tmp_path / "redcnn", model="redcnn", model_params={"width": 8}, scheme_params={},
        epochs=1,
    )  # fmt: skip
    train(redcnn, Reporter())
    meta = read_metadata(tmp_path / "redcnn" / "final")
    assert meta["scheme"]["name"] == "regression" and "steps_curve" not in meta
    logs = [e.get("message") for e in events_of(tmp_path / "redcnn" / "events.jsonl")]
    assert not any(str(m).startswith("steps curve") for m in logs)  # nothing to choose
