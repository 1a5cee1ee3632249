"""ipv2 distill: a one-step student of a multi-step teacher, end to end on a tiny dataset.

One tiny FFM teacher (base 8, 4 flow steps, a few training steps on 64x64 slices) is
distilled through the command line; a stop and two resumes show that finished teacher
slices are reused (the log line that counts them, file times, equal contents) and that
the student trains on to its final model, whose ``model.json`` and card say whose student
it is and how both score; ``ipv2 denoise`` then runs the student like any model.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import tiny_checkpoint
from test_train import make_dataset

from ipv2.cli import main
from ipv2.core.events import Reporter
from ipv2.core.volume import Volume
from ipv2.inference.model_card import card_text
from ipv2.io.checkpoints import load_checkpoint, read_metadata
from ipv2.io.volumes import read_volume, write_volume
from ipv2.training import TrainConfig, train
from ipv2.training import distill as distill_module
from ipv2.training.distill import DistillConfig, distill

torch.set_num_threads(1)

COMMON = ["--crop", "32", "--val-limit", "2", "--threads", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 4-step FFM teacher and its dataset (4 training slices, 2 validation slices)."""
    root = tmp_path_factory.mktemp("distill")
    data = make_dataset(root / "ds", size=64, train_cases=2, slices=2)
    cfg = TrainConfig(
        data=str(data), output=str(root / "teacher"), model="ffm",
        model_params={"base": 8, "mults": [1, 2]}, scheme_params={"steps": 4}, epochs=2,
        batch_size=2, lr=1e-3, crop=32, val_every=0, threads=1,
    )  # fmt: skip
    assert train(cfg, Reporter())["status"] == "ok"
    return root / "teacher" / "final", data


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    """``ipv2 ARGV --events jsonl`` in this process: exit status and events."""
    status = main([*argv, "--events", "jsonl"])
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def logs(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["message"]) for e in events if e["event"] == "log"]


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [e for e in events if e["event"] == "done"]
    assert len(ends) == 1, ends  # the trainer's own done stays in student/events.jsonl
    return ends[0]


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.npy"))}


def test_distill_stop_resume_and_denoise(
    teacher_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, data = teacher_and_data
    run = tmp_path / "run"
    status, events = cli(
        capsys, "distill", "--teacher", str(teacher), "--data", str(data), "--out", str(run),
        "--epochs", "2", "--max-steps", "2", *COMMON,
    )  # fmt: skip
    end = done(events)
    assert status == 0 and end["status"] == "stopped" and end["reason"] == "step budget"
    assert end["phase"] == "student" and end["step"] == 2
    assert "ipv2 distill --resume --out" in end["resume_command"]
    assert "teacher targets: 0 of 4 slices already computed, 4 computed now" in logs(events)
    assert not any(line.startswith("to continue: ipv2 train") for line in logs(events))
    assert not (run / "student" / "final").exists()
    cache = run / "teacher-targets" / "train" / "teacher"
    before = mtimes(cache)
    assert sorted(before) == ["case0.npy", "case1.npy"]

    # A new run into the same folder is refused, pointing at --resume.
    status, events = cli(
        capsys, "distill", "--teacher", str(teacher), "--data", str(data), "--out", str(run)
    )
    assert status == 1 and "--resume" in events[-1]["message"]

    status, events = cli(capsys, "distill", "--resume", "--out", str(run), "--max-steps", "4")
    end = done(events)
    assert status == 0 and end["status"] == "ok" and end["step"] == 4
    assert "teacher targets: 4 of 4 slices already computed, 0 computed now" in logs(events)
    assert any(line.startswith("resumed from") and "step 2" in line for line in logs(events))
    assert mtimes(cache) == before  # reused, not recomputed

    final = run / "student" / "final"
    meta = read_metadata(final)
    t_meta = read_metadata(teacher)
    assert meta["role"] == "student" and meta["arch"] == "ffm"
    assert meta["hparams"]["base"] == 16 and meta["hparams"]["mults"] == [1, 2]
    # Trained at its sampler's only time, t = 0 (ipv2.schemes.flow, times="sampler").
    assert meta["scheme"] == {"name": "flow", "params": {"steps": 1, "times": "sampler"}}
    assert meta["teacher"]["sha256"] == t_meta["weights"]["sha256"]
    assert meta["teacher"]["name"] == "teacher/final" and meta["teacher"]["steps"] == 4
    assert meta["window"] == t_meta["window"]
    assert meta["purification"] == t_meta["purification"]
    assert meta["data_fingerprint"] == t_meta["data_fingerprint"]  # the same dataset
    figures = meta["distill"]
    assert figures == end["distill"]
    assert figures["slices"] == 2 and figures["teacher_steps"] == 4
    assert figures["student_steps"] == 1
    assert 0 < figures["teacher_rmse_hu"] < 2048 and 0 < figures["student_rmse_hu"] < 2048
    assert figures["ratio"] == pytest.approx(
        figures["student_rmse_hu"] / figures["teacher_rmse_hu"], rel=1e-3
    )
    closing = logs(events)
    assert any(
        f"teacher {figures['teacher_rmse_hu']:.1f} HU" in line
        and f"student {figures['student_rmse_hu']:.1f} HU" in line
        for line in closing
    )
    card = card_text(meta)
    assert "Role:" in card and "student" in card
    assert "Teacher:" in card and "'teacher/final'" in card and "Distillation:" in card
    assert read_metadata(run / "student" / "best")["role"] == "student"
    load_checkpoint(final)  # model.json rewritten, weights still verified

    # ipv2 denoise runs the student unchanged, in one step.
    volume = tmp_path / "u.nrrd"
    write_volume(Volume(np.load(data / "val" / "uldct" / "case0.npy")), volume)
    out = tmp_path / "d.nrrd"
    status, events = cli(
        capsys, "denoise", "--input", str(volume), "--model", str(final), "--out", str(out),
        "--device", "cpu", "--threads", "1",
    )  # fmt: skip
    assert status == 0 and done(events)["status"] == "ok"
    denoised = read_volume(out).array
    assert denoised.shape == (2, 64, 64) and np.isfinite(denoised).all()


class StopAfterSlices(Reporter):
    """Sends this process SIGTERM once ``slices`` teacher slices are done: a user's Ctrl+C."""

    def __init__(self, slices: int) -> None:
        self.slices = slices
        self.sent = False
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))
        if (
            kind == "progress"
            and fields["stage"] == "teacher targets"
            and fields["done"] >= self.slices
            and not self.sent
        ):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_teacher_targets_keeps_finished_slices(
    teacher_and_data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teacher, data = teacher_and_data
    run = tmp_path / "run"
    monkeypatch.setattr(distill_module, "CHUNK", 1)  # one teacher call per slice
    cfg = DistillConfig(
        teacher=str(teacher), data=str(data), out=str(run), crop=32, epochs=1,
        val_limit=2, threads=1, lr=1e-3,
    )  # fmt: skip
    result = distill(cfg, StopAfterSlices(1))
    assert result["status"] == "stopped" and result["reason"] == "signal SIGTERM"
    assert result["phase"] == "teacher targets"
    pending = run / "teacher-targets" / ".slices"
    finished = sorted(p.relative_to(pending).as_posix() for p in pending.rglob("*.npy"))
    assert finished == ["case0/00000.npy"]
    first = np.load(pending / "case0" / "00000.npy")
    assert not (run / "student").exists()

    status, events = cli(capsys, "distill", "--resume", "--out", str(run))
    assert status == 0 and done(events)["status"] == "ok"
    assert "teacher targets: 1 of 4 slices already computed, 3 computed now" in logs(events)
    assembled = np.load(run / "teacher-targets" / "train" / "teacher" / "case0.npy")
    assert assembled.shape == (2, 64, 64)
    np.testing.assert_array_equal(assembled[0], first)
    assert not pending.exists()  # assembled cases leave no slice files behind
    assert read_metadata(run / "student" / "final")["distill"]["slices"] == 2


def test_refusals_are_one_line(
    teacher_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, data = teacher_and_data
    weak = tiny_checkpoint(tmp_path / "weak", arch="redcnn")  # a one-pass regressor
    cases = [
        (["--teacher", str(weak), "--data", str(data)], "one-pass model"),
        (["--teacher", str(teacher), "--data", str(tmp_path / "missing")], "does not exist"),
        (["--teacher", str(tmp_path / "nothing"), "--data", str(data)], "does not exist"),
        (["--teacher", str(teacher), "--data", str(data), "--crop", "30"], "multiple of 4"),
    ]
    for argv, expected in cases:
        out = tmp_path / "run"
        status, events = cli(capsys, "distill", *argv, "--out", str(out))
        message = events[-1]["message"]
        assert status == 1 and events[-1]["event"] == "error", events
        assert expected in message and "\n" not in message
        assert not out.exists()  # refused before anything was written
    status, events = cli(capsys, "distill", "--resume", "--out", str(tmp_path), "--base", "8")
    assert status == 1 and "--base cannot change" in events[-1]["message"]
    status, events = cli(
        capsys, "distill", "--resume", "--out", str(tmp_path), "--times", "uniform"
    )
    assert status == 1 and "--times cannot change" in events[-1]["message"]
    status, events = cli(capsys, "distill", "--resume", "--out", str(tmp_path))
    assert status == 1 and "not a distillation run folder" in events[-1]["message"]
