"""Small real artefacts for self-tests (in Slicer and in the test suite).

An untrained tiny network saved as a genuine checkpoint exercises the whole inference
path (loading, windowing, batching, the job process) in seconds, without shipping or
downloading weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ipv2.checkpoint import model_metadata, save_model
from ipv2.intensity import HUWindow
from ipv2.models.registry import build, get_spec
from ipv2.schemes.registry import make_scheme


def tiny_checkpoint(
    folder: str | os.PathLike[str], arch: str = "ffm", seed: int = 0, **hparams: object
) -> Path:
    """Save an untrained tiny ``arch`` network (its registry 'tiny' size) to ``folder``."""
    torch.manual_seed(seed)
    spec = get_spec(arch)
    model = build(arch, **{**dict(spec.tiny), **hparams})
    meta = model_metadata(
        model, make_scheme(spec.scheme), HUWindow(-1024.0, 1024.0), strategy="ipv2", modules=[1, 2]
    )
    return save_model(folder, model, meta)
