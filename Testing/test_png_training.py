"""Training on the authors' PNG layout reads it only through ``ipv2.io.png_layout``.

Real PNG files in a temporary folder, real training steps, no mocks: a valid 8-bit grey
layout trains and checkpoints; a 16-bit or a colour PNG is refused by name before any
output appears, instead of being wrapped to 8 bits or cut to one channel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW
from ipv2.data.training_pairs import SlicePairs, read_dataset_info
from ipv2.io.checkpoints import load_checkpoint
from ipv2.io.png_layout import write_png_pair
from ipv2.training import TrainConfig, train

torch.set_num_threads(1)

SIZE = 32


def make_png_layout(root: Path, train_pairs: int = 4, val_pairs: int = 2) -> Path:
    """A tiny layout: smooth HU ramps (normal dose) and noisy copies (low dose), 8-bit grey."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for split, count in (("train", train_pairs), ("val", val_pairs)):
        for k in range(count):
            clean = (-900.0 + 40.0 * (x + y) + 100.0 * k).astype(np.float32)
            low = (clean + 80.0 * rng.standard_normal(clean.shape)).astype(np.float32)
            write_png_pair(root, split, f"p{k:02d}", u=low, n=clean)
    return root


def save_png(path: Path, pixels: np.ndarray, vector: bool = False) -> Path:
    """Overwrite one layout file with raw pixels (16-bit or RGB), as another tool might."""
    path.unlink(missing_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=vector), str(path))
    return path


def tiny_config(data: Path, output: Path) -> TrainConfig:
    """The smallest settings of Testing/test_train.py: 4 slices, batch 2, 1 epoch = 2 steps."""
    return TrainConfig(
        data=str(data), output=str(output), model="unet",
        model_params={"base": 8, "mults": [1, 2]}, epochs=1, batch_size=2, lr=1e-3,
        crop=16, flips=True, val_limit=2, threads=1, device="cpu",
    )  # fmt: skip


def test_valid_grey_pngs_train_and_checkpoint(tmp_path: Path) -> None:
    data = make_png_layout(tmp_path / "pngs")
    result = train(tiny_config(data, tmp_path / "run"), Reporter())
    run = tmp_path / "run"
    assert result["status"] == "ok" and result["step"] == 2 and result["epoch"] == 1
    for folder in (run / "final", run / "best"):
        assert (folder / "model.json").is_file() and (folder / "model.safetensors").is_file()
    loaded = load_checkpoint(run / "final")
    assert loaded.meta["step"] == 2 and loaded.meta["data_fingerprint"]
    assert loaded.meta["train_kinds"] == ["input", "ndct"]
    assert loaded.meta["purification"] == {"strategy": None, "modules": []}
    assert set(loaded.meta["metrics"]) == {"mae_hu", "psnr", "ssim"}
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert {"metric", "checkpoint"} <= set(kinds) and kinds[-1] == "done"
    assert events[-1]["status"] == "ok" and events[-1]["step"] == 2


def test_pairs_are_hu_through_the_window_in_file_name_order(tmp_path: Path) -> None:
    data = make_png_layout(tmp_path / "pngs", train_pairs=2, val_pairs=0)
    hu = np.full((SIZE, SIZE), -500.0, np.float32)
    write_png_pair(data, "train", "p00-b", u=hu, n=hu)  # '-' sorts before '.': p00-b.png < p00.png
    pairs = SlicePairs(read_dataset_info(data), "train", "input", "ndct")
    assert pairs.names == ["p00-b", "p00", "p01"]
    for i, name in enumerate(pairs.names):
        low, high, _ = pairs.slices(i)
        for got, folder in ((low, "lq"), (high, "gt")):
            gray = sitk.GetArrayFromImage(
                sitk.ReadImage(str(data / "train" / folder / f"{name}.png"))
            )
            assert np.array_equal(got[0], DEFAULT_PNG_WINDOW.from_uint8(gray))


def test_16_bit_png_is_refused_by_name(tmp_path: Path) -> None:
    data = make_png_layout(tmp_path / "pngs")
    bad = save_png(data / "train" / "gt" / "p01.png", np.full((SIZE, SIZE), 300, np.uint16))
    with pytest.raises(InputError, match="8-bit") as caught:
        train(tiny_config(data, tmp_path / "run"), Reporter())
    assert str(bad) in str(caught.value)
    assert not (tmp_path / "run").exists()  # refused before the output folder appears


def test_colour_png_is_refused_by_name(tmp_path: Path) -> None:
    data = make_png_layout(tmp_path / "pngs")
    grey = np.full((SIZE, SIZE), 100, np.uint8)
    colour = np.stack([grey, grey, grey + 50], axis=-1)
    bad = save_png(data / "val" / "lq" / "p00.png", colour, vector=True)
    with pytest.raises(InputError, match=r"colour.*grayscale") as caught:
        train(tiny_config(data, tmp_path / "run"), Reporter())
    assert str(bad) in str(caught.value)
    assert not (tmp_path / "run").exists()
