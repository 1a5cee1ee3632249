"""Checkpoints: round trip, metadata, refusals (pickle, truncation, other architecture), atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow
from ipv2.io import checkpoints as ck
from ipv2.models import MODELS, build
from ipv2.schemes import make_scheme

torch.set_num_threads(1)
WINDOW = HUWindow(-1100.0, 900.0)


def save_tiny(folder: Path, arch: str = "unet", scheme: str = "flow") -> Path:
    torch.manual_seed(0)
    model = build(arch, **MODELS[arch].tiny)
    meta = ck.model_metadata(
        model,
        make_scheme(scheme, steps=4) if scheme != "regression" else make_scheme(scheme),
        WINDOW,
        strategy="ipv2",
        modules=[1, 2, 3],
        data_fingerprint="abc",
        epoch=2,
        step=40,
        metrics={"mae_hu": 12.5},
    )
    return ck.save_model(folder, model, meta)


def test_round_trip_restores_weights_and_metadata(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "ck")
    torch.manual_seed(0)
    original = build("unet", **MODELS["unet"].tiny).eval()
    loaded = ck.load_checkpoint(folder / "model.safetensors")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(loaded.model(x, torch.zeros(1)), original(x, torch.zeros(1)))
    assert loaded.window == WINDOW
    assert loaded.scheme.name == "flow" and loaded.scheme.default_steps == 4
    meta = loaded.meta
    assert meta["arch"] == "unet" and meta["hparams"]["base"] == 8
    assert meta["purification"] == {"strategy": "ipv2", "modules": [1, 2, 3]}
    assert meta["data_fingerprint"] == "abc" and meta["step"] == 40 and meta["epoch"] == 2
    assert meta["metrics"] == {"mae_hu": 12.5} and meta["engine_version"]
    assert len(meta["weights"]["sha256"]) == 64
    assert not loaded.model.training


def test_pickled_pth_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pth = tmp_path / "model.pth"
    torch.save(build("unet", **MODELS["unet"].tiny).state_dict(), pth)
    with pytest.raises(InputError, match="pickle"):
        ck.load_checkpoint(pth)
    # The same pickle renamed into a checkpoint folder is refused too, never unpickled.
    folder = save_tiny(tmp_path / "ck")
    shutil.copy(pth, folder / "model.safetensors")
    with pytest.raises(InputError, match="pickle"):
        ck.load_checkpoint(folder)
    only_pth = tmp_path / "folder"
    only_pth.mkdir()
    shutil.copy(pth, only_pth / "weights.pth")
    with pytest.raises(InputError, match=r"model.json is missing.*never loaded"):
        ck.load_checkpoint(only_pth)


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "ck")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        ck.load_checkpoint(folder)
    # Even with a consistent record, safetensors itself must reject the damaged file.
    meta = json.loads((folder / "model.json").read_text())
    meta["weights"] = {
        "file": "model.safetensors",
        "sha256": ck._sha256(weights),
        "bytes": weights.stat().st_size,
    }
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not a valid safetensors"):
        ck.load_checkpoint(folder)


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "ck", "unet")
    with pytest.raises(InputError, match="holds a 'unet' network, not 'ffm'"):
        ck.load_checkpoint(folder, arch="ffm")
    # Weights of one network under another's description: shapes disagree, named.
    other = save_tiny(tmp_path / "reg", "redcnn", "regression")
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    meta = json.loads((folder / "model.json").read_text())
    meta["weights"] = json.loads((other / "model.json").read_text())["weights"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not fit the 'unet' network"):
        ck.load_checkpoint(folder)


def test_foreign_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not an ipv2 model description"):
        ck.load_checkpoint(tmp_path)


@pytest.mark.parametrize("body", [b"\xff\xfe{", b'{"format": "ipv2-model",', b"[1, 2]"])
def test_damaged_model_json_is_one_error_naming_it(tmp_path: Path, body: bytes) -> None:
    folder = save_tiny(tmp_path / "ck")
    (folder / "model.json").write_bytes(body)
    with pytest.raises(InputError, match=r"model\.json (is not|holds a JSON list)"):
        ck.load_checkpoint(folder)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        (["flow"], "'scheme' must be an object"),
        ({"name": "flow", "params": 3}, "'scheme' must be an object"),
        ({"name": "flow", "params": {"bogus": 1}}, "does not take these parameters"),
        ({"name": "flow", "params": {"steps": "many"}}, "invalid scheme parameters"),
        ({"name": "nope"}, "unknown scheme 'nope'"),
    ],
)
def test_damaged_scheme_record_is_named(tmp_path: Path, scheme: object, expected: str) -> None:
    folder = save_tiny(tmp_path / "ck")
    meta = json.loads((folder / "model.json").read_text())
    meta["scheme"] = scheme
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"model.json: .*{expected}"):
        ck.load_checkpoint(folder)


def test_damaged_train_state_json_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    ck.write_checkpoint(
        folder, {"w": torch.zeros(2)}, {"format": ck.FORMAT}, state=ck.TrainState({}, {"step": 1})
    )
    assert ck.load_train_state(folder).scalars["step"] == 1
    (folder / ck.STATE_META).write_text('{"step": 1,')
    with pytest.raises(InputError, match=r"train_state\.json is not valid JSON"):
        ck.load_train_state(folder)


def test_failed_write_leaves_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = save_tiny(tmp_path / "best")
    before = (folder / "model.json").read_text()

    def boom(path: Path, data: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_write_json", boom)
    with pytest.raises(OSError):
        save_tiny(tmp_path / "best")
    with pytest.raises(OSError):
        save_tiny(tmp_path / "new")
    assert (folder / "model.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_recover_after_a_crash_between_renames(tmp_path: Path) -> None:
    folder = save_tiny(tmp_path / "best")
    folder.rename(tmp_path / ".best.old-x1")
    (tmp_path / ".best.partial-y2").mkdir()
    ck.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    ck.load_checkpoint(tmp_path / "best")


def test_optimizer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("redcnn", **MODELS["redcnn"].tiny)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 1, 8, 8)).mean().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = ck.flatten(opt.state_dict(), "opt", tensors)
    state = ck.TrainState(tensors, {"optimizer": skeleton, "rng": "uint8"})
    ck.write_checkpoint(tmp_path / "s", model.state_dict(), {"format": ck.FORMAT}, state=state)
    back = ck.load_train_state(tmp_path / "s")
    opt2 = torch.optim.Adam(model.parameters(), lr=5.0)
    opt2.load_state_dict(ck.unflatten(back.scalars["optimizer"], back.tensors))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    for k in a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][k][name], b["state"][k][name])
