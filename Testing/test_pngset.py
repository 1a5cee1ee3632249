"""The authors' PNG layout: HU through an explicit window, pairing, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ipv2.core.errors import InputError
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.io.png_layout import list_png_pairs, read_gray8, read_png_pair, write_png_pair


def _save(path: Path, arr: np.ndarray, vector: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=vector), str(path))


def test_round_trip_through_window(tmp_path: Path) -> None:
    hu = np.linspace(-1024, 1024, 32 * 40, dtype=np.float32).reshape(32, 40)
    pair = write_png_pair(tmp_path, "train", "p001_s01", u=hu, n=hu + 100.0)
    gray = read_gray8(pair.lq)
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    u, _n = read_png_pair(list_png_pairs(tmp_path)[0])
    assert u.shape == (1, 32, 40)
    step = DEFAULT_PNG_WINDOW.width / 255
    assert np.abs(u.array[0] - hu).max() <= step / 2 + 1e-3  # HU, not gray levels
    assert u.array.min() < -1000  # 8-bit values were not taken for HU
    narrow = HUWindow(-1000.0, 0.0)
    u2, _ = read_png_pair(list_png_pairs(tmp_path)[0], narrow)
    assert np.isclose(u2.array.max(), 0.0) and np.isclose(u2.array.min(), -1000.0)


def test_pairing_and_order(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.float32)
    for split, name in (("train", "b"), ("train", "a"), ("test", "c")):
        write_png_pair(tmp_path, split, name, u=img, n=img)
    pairs = list_png_pairs(tmp_path)
    assert [(p.split, p.name) for p in pairs] == [("train", "a"), ("train", "b"), ("test", "c")]


def test_unpaired_and_mismatched_sizes(tmp_path: Path) -> None:
    _save(tmp_path / "train/lq/x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=r"train/lq/x.png has no partner in train/gt"):
        list_png_pairs(tmp_path)
    _save(tmp_path / "train/gt/x.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(InputError, match="different sizes"):
        read_png_pair(list_png_pairs(tmp_path)[0])
    with pytest.raises(InputError, match="not in the PNG layout"):
        list_png_pairs(tmp_path / "train")


def test_rgb_accepted_only_when_gray(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _save(tmp_path / "g.png", np.stack([gray] * 3, -1), vector=True)
    assert np.array_equal(read_gray8(tmp_path / "g.png"), gray)
    colour = np.stack([gray, gray, 255 - gray], -1)
    _save(tmp_path / "c.png", colour, vector=True)
    with pytest.raises(InputError, match="colour"):
        read_gray8(tmp_path / "c.png")
    _save(tmp_path / "w.png", gray.astype(np.uint16) * 100)
    with pytest.raises(InputError, match="8-bit"):
        read_gray8(tmp_path / "w.png")
