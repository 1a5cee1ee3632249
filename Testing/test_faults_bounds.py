"""Absurd numbers (issue 18, items 2 and 3): refused in one line before they cost anything.

Model folders whose model.json asks for a network of 10^14 parameters, hyper-parameters
of the wrong type, ``ipv2 train --model-param base=100000``, ``--epochs 100000000`` and
``ipv2 denoise --steps 1000000``: each must end with exit status 1 and one line on
stderr, quickly, and leave nothing behind. Before the bounds existed the first ones
ended in an allocator traceback and the last ran for days.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from factories import tiny_checkpoint
from test_train import child_env, make_dataset

from ipv2.core.errors import InputError
from ipv2.core.long_runs import MAX_SAMPLER_STEPS, describe_duration, training_counts_refusal
from ipv2.inference.denoise import DenoiseOptions, denoise_array
from ipv2.io.checkpoints import load_checkpoint
from ipv2.io.volumes import write_volume
from ipv2.models import bounds
from ipv2.models.registry import MODELS, build, checked_hparams, resolve_hparams
from ipv2.phantom import make_phantom


def ipv2(*args: str) -> subprocess.CompletedProcess[str]:
    # The timeout only keeps a regression (a run that does not stop) from hanging the suite.
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in lines[0]
    return lines[0]


def hostile_model(folder: Path, arch: str, *, weights: bool = False, **changes: Any) -> Path:
    """A real tiny checkpoint whose model.json then declares ``changes`` (hparams, scheme)."""
    tiny_checkpoint(folder, arch)
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text())
    scheme_steps = changes.pop("scheme_steps", None)
    if scheme_steps is not None:
        meta["scheme"]["params"]["steps"] = scheme_steps
    meta["hparams"].update(changes)
    meta_path.write_text(json.dumps(meta))
    if not weights:  # the bounds must come before the weights are even looked at
        (folder / "model.safetensors").unlink()
    return folder


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64 x 64 slices, the size of the issue's runaway denoise."""
    vol = make_phantom(size=64, slices=4, seed=3).uldct
    return write_volume(vol, tmp_path_factory.mktemp("vol") / "u.nrrd")


# ------------------------------------------------------------------ model size (item 2)

HUGE = [
    ("ffm", {"base": 100000}, "base=100000"),
    ("unet", {"mults": [1, 1000]}, "mults=[1,1000]"),
    ("colddiff", {"base": 4096, "mults": [1, 2, 4, 8]}, "base=4096"),
    ("corediff", {"base": 60000, "mults": [1]}, "base=60000"),
    ("redcnn", {"width": 60000}, "width=60000"),
]


@pytest.mark.parametrize(("arch", "hparams", "named"), HUGE)
def test_huge_model_json_is_refused_before_weights(
    tmp_path: Path, arch: str, hparams: dict[str, Any], named: str
) -> None:
    folder = hostile_model(tmp_path / "m", arch, **hparams)
    with pytest.raises(InputError) as err:
        load_checkpoint(folder)
    message = str(err.value)
    assert named in message and "parameters" in message and "limit of 1e+09" in message
    assert "model.json" in message and bounds.PARAMS_ENV in message


WRONG = [
    ("ffm", {"base": "8"}, "base must be an integer"),
    ("ffm", {"base": 8.5}, "base must be an integer"),
    ("ffm", {"base": True}, "base must be an integer"),
    ("ffm", {"base": 0}, "base must be an integer from 1"),
    ("ffm", {"base": 10**30}, "base must be an integer from 1 to 1048576"),
    ("unet", {"mults": []}, "mults must be a list of 1 to 8"),
    ("unet", {"mults": "1,2"}, "mults must be a list"),
    ("unet", {"mults": [1, 0]}, "mults must be a list"),
    ("unet", {"mults": [1] * 9}, "mults must be a list of 1 to 8"),
    ("unet", {"base": 64, "mults": [1, 20000]}, "more than 1048576"),
    ("colddiff", {"dropout": 1.5}, "dropout must be a number in [0, 1)"),
    ("colddiff", {"in_channels": 0}, "in_channels must be an integer"),
    ("corediff", {"context": -1}, "context must be an integer from 0"),
    ("redcnn", {"kernel": 4}, "kernel must be odd"),
    ("redcnn", {"width": None}, "width must be an integer"),
]


@pytest.mark.parametrize(("arch", "hparams", "expected"), WRONG)
def test_hparams_of_wrong_type_or_range_are_named(
    tmp_path: Path, arch: str, hparams: dict[str, Any], expected: str
) -> None:
    folder = hostile_model(tmp_path / "m", arch, **hparams)
    with pytest.raises(InputError, match=re.escape(expected)):
        load_checkpoint(folder)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_meta_count_is_exact_and_stores_nothing(arch: str) -> None:
    """The count comes from a build whose tensors have shapes but no storage."""
    tiny = resolve_hparams(arch, MODELS[arch].tiny)
    real = sum(p.numel() for p in build(arch, **tiny).parameters())
    assert bounds.parameter_count(MODELS[arch].constructor, tiny) == real
    built: list[torch.nn.Module] = []

    def keep(**params: Any) -> torch.nn.Module:
        built.append(MODELS[arch].constructor(**params))
        return built[-1]

    key = "width" if arch == "redcnn" else "base"
    huge = resolve_hparams(arch, {key: 50000})
    assert bounds.parameter_count(keep, huge) > 10**10
    assert all(p.is_meta for p in built[0].parameters())


def test_limit_can_be_changed_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"width": 16}
    count = bounds.parameter_count(MODELS["redcnn"].constructor, resolve_hparams("redcnn", small))
    monkeypatch.setenv(bounds.PARAMS_ENV, str(count - 1))
    with pytest.raises(
        InputError, match=f"width=16 would have {count:,} parameters .* of {count - 1:,};"
    ):
        build("redcnn", **small)
    monkeypatch.setenv(bounds.PARAMS_ENV, f"{count:.6e}")
    assert sum(p.numel() for p in build("redcnn", **small).parameters()) == count
    monkeypatch.setenv(bounds.PARAMS_ENV, "lots")
    with pytest.raises(InputError, match=bounds.PARAMS_ENV):
        checked_hparams("redcnn", small)


def test_cli_denoise_with_huge_model_json_says_one_line(tmp_path: Path, volume_file: Path) -> None:
    folder = hostile_model(tmp_path / "m", "ffm", weights=True, base=100000)
    res = ipv2(
        "denoise", "--input", str(volume_file), "--model", str(folder),
        "--out", str(tmp_path / "d.nrrd"), "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert "base=100000" in line and "limit" in line
    assert not (tmp_path / "d.nrrd").exists()


def test_train_model_param_base_100000_is_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    res = ipv2(
        "train", "--data", str(data), "--output", str(tmp_path / "run"),
        "--model-param", "base=100000", "--max-steps", "2", "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert "base=100000" in line and "parameters" in line and bounds.PARAMS_ENV in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--model-param", "mults=[]"], "mults must be a list"),
        (["--model-param", "base=abc"], "base must be an integer"),
        (["--epochs", "100000000"], "--epochs 100000000"),
        (["--max-steps", "1000000000000"], "--max-steps 1000000000000"),
        (["--steps", "1000000"], "--steps 1000000"),
    ],
)
def test_train_absurd_values_are_refused_before_the_data(
    tmp_path: Path, option: list[str], named: str
) -> None:
    """Refused before the dataset is read: the --data folder need not even exist."""
    res = ipv2("train", "--data", str(tmp_path / "ds"), "--output", str(tmp_path / "r"), *option)
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert named in line
    if "--model-param" not in option:
        assert "--allow-long" in line
        assert "would run for" in line or "network passes" in line
    assert not (tmp_path / "r").exists()


def test_training_counts_pass_at_normal_values() -> None:
    assert training_counts_refusal(epochs=200, max_steps=0, sampler_steps=10) is None
    assert training_counts_refusal(epochs=10_000, max_steps=10**8, sampler_steps=1000) is None
    message = training_counts_refusal(epochs=10**8, max_steps=0)
    assert message is not None and "3.17 years" in message
    assert describe_duration(90) == "1.5 min" and describe_duration(2.5) == "2.5 s"


# ------------------------------------------------------------------ step counts (item 3)


def test_cli_denoise_a_million_steps_is_refused_quickly(tmp_path: Path, volume_file: Path) -> None:
    model = tiny_checkpoint(tmp_path / "m", "ffm")
    res = ipv2(
        "denoise", "--input", str(volume_file), "--model", str(model),
        "--out", str(tmp_path / "d.nrrd"), "--steps", "1000000", "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert "1000000 sampler steps" in line and "--allow-long" in line
    assert "measured: one network pass on one 64x64 slice" in line and "4 slice(s)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_model_json_with_a_million_default_steps_is_refused(tmp_path: Path) -> None:
    """The bound is on the steps actually run, wherever they come from."""
    folder = hostile_model(tmp_path / "m", "ffm", weights=True, scheme_steps=1_000_000)
    loaded = load_checkpoint(folder)
    hu = make_phantom(size=32, slices=2, seed=1).uldct.array
    with pytest.raises(InputError, match="this model's own is 1000000"):
        denoise_array(hu, loaded, DenoiseOptions(device="cpu"))


def test_allow_long_runs_past_the_bound(tmp_path: Path) -> None:
    loaded = load_checkpoint(tiny_checkpoint(tmp_path / "m", "unet"))
    hu = make_phantom(size=32, slices=1, seed=1).uldct.array[:, :8, :8]
    steps = MAX_SAMPLER_STEPS + 1
    with pytest.raises(InputError, match=f"{steps} sampler steps"):
        denoise_array(hu, loaded, DenoiseOptions(steps=steps, device="cpu"))
    out, info = denoise_array(
        hu, loaded, DenoiseOptions(steps=steps, device="cpu", allow_long=True)
    )
    assert info.steps == steps and out.shape == hu.shape
