"""The docs' mask montages render (docs/masks.md): a small phantom run of the script."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ipv2.benchmarks import mask_montage


def test_phantom_montage_is_a_small_png(tmp_path: Path) -> None:
    path = mask_montage.phantom_montage(tmp_path, size=64)
    with Image.open(path) as img:
        assert img.size == (3 * mask_montage.PANEL, 2 * (mask_montage.PANEL + 22) + 22)
        assert img.mode == "P"  # palette PNG, small enough for the repository
    assert path.stat().st_size < 300_000


def test_without_the_real_series_only_the_phantom_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--out", str(tmp_path), "--data", str(tmp_path / "absent"), "--phantom-size", "64"]
    assert mask_montage.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks-phantom.png"]
    assert "real-CT montages skipped" in capsys.readouterr().err
