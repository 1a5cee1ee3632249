"""Small real artefacts for self-tests (in Slicer and in the test suite).

An untrained tiny network saved as a genuine checkpoint exercises the whole inference
path (loading, windowing, batching, the job process) in seconds, without shipping or
downloading weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ipv2.core.hu_window import HUWindow
from ipv2.io.checkpoints import model_metadata, save_model
from ipv2.models.registry import build, get_spec
from ipv2.purification.modules import Module
from ipv2.schemes.registry import make_scheme


def tiny_checkpoint(
    folder: str | os.PathLike[str], arch: str = "ffm", seed: int = 0, **hparams: object
) -> Path:
    """Save an untrained tiny ``arch`` network (its registry 'tiny' size) to ``folder``."""
    torch.manual_seed(seed)
    spec = get_spec(arch)
    model = build(arch, **{**dict(spec.tiny), **hparams})
    meta = model_metadata(
        model,
        make_scheme(spec.scheme),
        HUWindow(-1024.0, 1024.0),
        strategy="ipv2",
        modules=[Module.REMOVE_BACKGROUND, Module.ADD_NOISE],
    )
    return save_model(folder, model, meta)


def write_phantom_pairs(
    folder: str | os.PathLike[str],
    splits: tuple[str, ...] = ("train", "val", "test"),
    size: int = 64,
    *,
    slices: int = 2,
    seed: int = 0,
) -> Path:
    """Phantom uLDCT/NDCT volumes, one patient per split entry, and their ``pairs.csv``."""
    from ipv2.io.volumes import write_volume
    from ipv2.phantom import make_phantom

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["case,patient,split,uldct,ndct"]
    for i, split in enumerate(splits):
        case = make_phantom(size=size, slices=slices, seed=seed + i)
        write_volume(case.uldct, root / f"u{i}.nrrd")
        write_volume(case.ndct, root / f"n{i}.nrrd")
        rows.append(f"c{i},p{i},{split},u{i}.nrrd,n{i}.nrrd")
    manifest = root / "pairs.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest
