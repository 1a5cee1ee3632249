"""Training loop: outputs and events, exact resume after SIGKILL, SIGTERM stop, DDP via torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.io.checkpoints import load_checkpoint
from ipv2.training import TrainConfig, train

torch.set_num_threads(1)

KIND_VALUES = {"input": "low", "uldct": "low", "sim": "low", "ndct": "clean", "label": "clean"}


def make_dataset(
    root: Path,
    size: int = 32,
    train_cases: int = 2,
    slices: int = 4,
    train_kinds: tuple[str, ...] = ("input", "ndct"),
    val_kinds: tuple[str, ...] = ("uldct", "label"),
    seed: int = 0,
) -> Path:
    """A tiny dataset in the build-dataset format: smooth 'anatomy' in HU plus white noise."""
    rng = np.random.default_rng(seed)
    for split, cases, kinds in (("train", train_cases, train_kinds), ("val", 1, val_kinds)):
        for c in range(cases):
            clean = np.stack(
                [
                    ndimage.gaussian_filter(rng.standard_normal((size, size)), 3)
                    for _ in range(slices)
                ]
            )
            clean = (clean / clean.std() * 300.0 - 200.0).astype(np.float32)
            low = (clean + 150.0 * rng.standard_normal(clean.shape)).astype(np.float32)
            for kind in kinds:
                folder = root / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"case{c}.npy", low if KIND_VALUES[kind] == "low" else clean)
    manifest = {
        "format": "ipv2-dataset",
        "format_version": 1,
        "strategy": "ipv2",
        "modules": [1, 2, 3],
        "window_hu": [-1024.0, 1024.0],
        "cases": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


TINY = ["--model", "ffm", "--model-param", "base=8", "--model-param", "mults=[1,2]"]


def cli(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ipv2", "train", "--data", str(data), "--output", str(output),
        *TINY, "--batch-size", "2", "--lr", "1e-3", "--threads", "1", "--events", "jsonl",
        "--val-limit", "2", *extra,
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def events_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_training_writes_checkpoints_and_events(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    cfg = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="unet",
        model_params={"base": 8, "mults": [1, 2]}, epochs=2, batch_size=2, lr=1e-3,
        crop=16, flips=True, val_limit=2, threads=1,
    )  # fmt: skip
    result = train(cfg, Reporter())
    run = tmp_path / "run"
    assert result["status"] == "ok" and result["step"] == 8 and result["epoch"] == 2
    assert {p.name for p in run.iterdir()} >= {
        "config.json",
        "events.jsonl",
        "final",
        "best",
        "checkpoints",
    }
    loaded = load_checkpoint(run / "final")
    assert loaded.meta["arch"] == "unet" and loaded.meta["scheme"]["name"] == "flow"
    assert loaded.meta["purification"] == {"strategy": "ipv2", "modules": [1, 2, 3]}
    assert loaded.meta["data_fingerprint"] and loaded.meta["step"] == 8
    assert set(loaded.meta["metrics"]) == {"mae_hu", "psnr", "ssim"}
    kinds = [e["event"] for e in events_of(run / "events.jsonl")]
    assert {"log", "metric", "progress", "checkpoint"} <= set(kinds) and kinds[-1] == "done"
    with pytest.raises(OutputExistsError):
        train(cfg, Reporter())


def test_step_budget_then_resume_is_exact(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    base = dict(
        data=str(data), model="redcnn", model_params={"width": 8}, epochs=3,
        batch_size=2, lr=1e-3, crop=16, flips=True, val_limit=1, threads=1,
    )  # fmt: skip
    train(TrainConfig(output=str(tmp_path / "a"), **base))  # type: ignore[arg-type]
    stopped = train(TrainConfig(output=str(tmp_path / "b"), max_steps=5, **base))  # type: ignore[arg-type]
    assert stopped["status"] == "stopped" and stopped["reason"] == "step budget"
    assert not (tmp_path / "b" / "final").exists()
    cfg = TrainConfig.load(tmp_path / "b" / "config.json")
    cfg.max_steps = 0
    assert train(cfg, resume=True)["status"] == "ok"
    a, b = weights(tmp_path / "a" / "final"), weights(tmp_path / "b" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match="not a training dataset"):
        train(TrainConfig(data=str(tmp_path), output=str(tmp_path / "r1")))
    with pytest.raises(InputError, match="multiple of 2"):
        train(TrainConfig(data=str(data), output=str(tmp_path / "r2"), model="unet",
                          model_params={"base": 8, "mults": [1, 2]}, crop=15))  # fmt: skip
    with pytest.raises(InputError, match="batch size"):
        train(TrainConfig(data=str(data), output=str(tmp_path / "r3"), model="redcnn",
                          batch_size=64))  # fmt: skip
    assert not (tmp_path / "r3").exists()  # nothing is created before the checks pass
    with pytest.raises(InputError, match="cannot resume"):
        train(TrainConfig(data=str(data), output=str(tmp_path / "r3")), resume=True)


def run_until_checkpoint(cmd: list[str], min_step: int, sig: int) -> subprocess.Popen[str]:
    """Start a training child and send ``sig`` once it reports a checkpoint at ``min_step``+."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "checkpoint" and int(event["step"]) >= min_step:
            proc.send_signal(sig)
            break
    proc.stdout.read()
    proc.wait(timeout=120)
    return proc


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    extra = [
        "--epochs",
        "6",
        "--checkpoint-every-steps",
        "3",
        "--crop",
        "16",
        "--flips",
        "--keep",
        "50",
    ]
    full = subprocess.run(cli(data, tmp_path / "full", *extra), capture_output=True, text=True,
                          env=child_env(), timeout=300)  # fmt: skip
    assert full.returncode == 0, full.stderr

    killed = run_until_checkpoint(cli(data, tmp_path / "cut", *extra), 3, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "final").exists(), "the run finished before the kill"
    # Whatever the kill interrupted, every visible checkpoint is complete and loadable.
    for folder in (tmp_path / "cut" / "checkpoints").glob("step-*"):
        load_checkpoint(folder)

    resumed = subprocess.run(
        [sys.executable, "-m", "ipv2", "train", "--resume", "--output", str(tmp_path / "cut"),
         "--events", "jsonl"],
        capture_output=True, text=True, env=child_env(), timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert '"status": "ok"' in resumed.stdout.splitlines()[-1]
    a, b = weights(tmp_path / "full" / "final"), weights(tmp_path / "cut" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_sigterm_finishes_the_step_and_checkpoints(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    proc = run_until_checkpoint(
        cli(data, tmp_path / "run", "--epochs", "50", "--checkpoint-every-steps", "2"),
        2,
        signal.SIGTERM,
    )
    assert proc.returncode == 130
    events = events_of(tmp_path / "run" / "events.jsonl")
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "stopped"
    assert str(done["reason"]).startswith("signal SIGTERM")
    last = [e for e in events if e["event"] == "checkpoint"][-1]
    assert last["step"] == done["step"]
    load_checkpoint(str(last["path"]))


@pytest.mark.slow
def test_torchrun_ddp_gloo_on_cpu(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed with this torch")
    data = make_dataset(tmp_path / "ds")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 400),
           *cli(data, tmp_path / "run", "--epochs", "2")[1:]]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    done = [json.loads(line) for line in out.stdout.splitlines() if '"event": "done"' in line]
    assert len(done) == 1 and done[0]["status"] == "ok"  # rank 0 only
    assert done[0]["step"] == 4  # 8 slices / (2 ranks x batch 2) x 2 epochs
    loaded = load_checkpoint(tmp_path / "run" / "final")
    assert loaded.meta["arch"] == "ffm" and loaded.meta["config"]["batch_size"] == 2


def test_resume_of_a_copied_run_writes_into_the_copy(tmp_path: Path) -> None:
    """A copied run folder resumed from another directory: the original is never touched."""
    data = make_dataset(tmp_path / "ds")
    work = tmp_path / "work"
    work.mkdir()
    first = subprocess.run(
        [*cli(Path("../ds"), Path("rA"), "--max-steps", "4", "--checkpoint-every-steps", "2")],
        capture_output=True, text=True, env=child_env(), timeout=300, cwd=work,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    original = sorted(p.name for p in (work / "rA" / "checkpoints").iterdir())
    assert original, "the first run saved no checkpoint"
    shutil.copytree(work / "rA", tmp_path / "rB")
    resumed = subprocess.run(
        [sys.executable, "-m", "ipv2", "train", "--resume", "--output", "rB", "--max-steps", "8",
         "--events", "jsonl"],
        capture_output=True, text=True, env=child_env(), timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in (work / "rA" / "checkpoints").iterdir()) == original
    copied = sorted(p.name for p in (tmp_path / "rB" / "checkpoints").iterdir())
    assert copied != original and copied[-1].endswith("8"), copied
    assert data.exists()
