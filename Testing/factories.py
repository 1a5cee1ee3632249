"""Small real files for tests: synthetic DICOM series and oblique volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ipv2.core.volume import Volume
from ipv2.slicer.selftest import tiny_checkpoint

__all__ = [
    "follow",
    "oblique_volume",
    "tiny_checkpoint",
    "tiny_training_run",
    "write_dicom_series",
]


def follow(task: Any, timeout: float = 600.0) -> list[Any]:
    """Poll a panel state machine (BackgroundStep, StepQueue, RunWatch) until a poll reports
    the end; every view seen. Generous timeout: a loaded CI machine is slow, not wrong."""
    import time

    views = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        views.append(task.poll())
        if views[-1].finished:
            return views
        time.sleep(0.05)
    raise AssertionError(f"timed out: {views[-1].status if views else 'never polled'}")


def tiny_training_run(root: Path, *, seed: int = 0, **train: object) -> Path:
    """A tiny FFM (base 8) trained by the real loop on a 64 px phantom IPv1 dataset with a
    train and a validation pair (``root/ds``); the run folder ``root/run``. ``train``
    overrides TrainConfig fields (budget, steps)."""
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe
    from ipv2.slicer.selftest import write_phantom_pairs
    from ipv2.training import TrainConfig
    from ipv2.training import train as run_training

    pairs = write_phantom_pairs(root / "pairs", ("train", "val"), size=64, slices=2, seed=seed)
    build_dataset(pairs, root / "ds", BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    config = TrainConfig(
        **{
            "data": str(root / "ds"),
            "output": str(root / "run"),
            "model": "ffm",
            "model_params": {"base": 8, "mults": [1, 2]},
            "crop": 32,
            "val_every": 0,
            "device": "cpu",
            **train,
        }  # type: ignore[arg-type]
    )
    run_training(config)
    return root / "run"


def write_dicom_series(
    folder: Path,
    hu: npt.NDArray[np.int16],
    series_uid: str,
    slice_spacing: float = 2.0,
    intercept: int = -1024,
    description: str = "synthetic",
    reverse_names: bool = True,
) -> list[Path]:
    """Write one CT series through GDCM; stored values are ``hu - intercept``.

    File names run opposite to slice position when ``reverse_names`` is set, so a reader
    that sorted by name instead of position would get the volume upside down.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    depth = hu.shape[0]
    for k in range(depth):
        image = sitk.GetImageFromArray(np.ascontiguousarray(hu[k]))
        image.SetSpacing((0.75, 0.75))
        tags = {
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"-10\\-20\\{k * slice_spacing}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|1052": str(intercept),
            "0028|1053": "1",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        tag = series_uid.replace(".", "_")[-8:]
        name = f"s{tag}_{(depth - 1 - k) if reverse_names else k:03d}.dcm"
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / name))
        writer.Execute(image)
        paths.append(folder / name)
    return paths


def oblique_volume(shape: tuple[int, int, int] = (5, 12, 9), seed: int = 0) -> Volume:
    """A volume with odd spacing, an offset origin and a rotated, non-axis-aligned frame."""
    rng = np.random.default_rng(seed)
    a, b = 0.3, -0.2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Volume(
        rng.uniform(-1000, 1500, shape).astype(np.float32),
        spacing=(0.7, 0.83, 2.5),
        origin=(-120.25, 33.5, 701.125),
        direction=rz @ rx,
    )
