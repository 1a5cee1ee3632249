"""Small real artefacts for self-tests (in Slicer and in the test suite).

An untrained tiny network saved as a genuine checkpoint exercises the whole inference
path (loading, windowing, batching, the job process) in seconds, without shipping or
downloading weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def denoise_selftest(
    logic: Any, *, say: Callable[[str], None], keep_alive: Callable[[], None]
) -> Any:
    """The IPv2Denoise self-test's steps on the current scene; the denoised node.

    Kept here, not in the module file, so the module stays wiring only and the same
    steps run under pytest on a real MRML scene. ``logic`` is the module's logic;
    ``keep_alive`` lets the GUI paint while the job runs (``slicer.app.processEvents``).
    """
    import tempfile

    from ipv2.phantom import make_phantom
    from ipv2.slicer.nodes import node_from_volume
    from ipv2.slicer.preview import LivePreview

    say("Creating phantom volumes and previewing masks")
    case = make_phantom(size=128, slices=4, seed=0)
    p = logic.getParameterNode()
    p.uldctVolume = node_from_volume(case.uldct, "phantom uLDCT")
    p.ndctVolume = node_from_volume(case.ndct, "phantom NDCT")
    status = LivePreview(lambda: True).update(p, 2, logic=logic)
    _check(status.startswith("Slice 2: lung"), f"preview: {status}")

    say("Denoising with a tiny untrained model")
    p.modelPath = Path(tiny_checkpoint(os.path.join(tempfile.mkdtemp(), "tiny")))
    p.steps, p.device = 1, "cpu"
    node = _result(logic.startDenoise(p), keep_alive)
    _check(node.GetImageData().GetDimensions() == (128, 128, 4), "denoised volume's size")
    _check(p.denoisedVolume is node, "the panel's parameter node names the result")

    say("Previewing the IPv2 training input of one slice (a background simulation)")
    p.fusionKind = "IPv2 training input"
    preview = _result(logic.previewFusion(p, 2), keep_alive)
    _check(preview.GetImageData().GetDimensions() == (128, 128, 1), "preview slice's size")
    return node


def _result(task: Any, keep_alive: Callable[[], None], timeout: float = 300.0) -> Any:
    """Poll an :class:`ipv2.slicer.engine_task.EngineTask` as the panel's timer does."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = task.poll()
        if view.outcome is not None:
            outcome = view.outcome
            _check(outcome.node is not None, f"{outcome.message}\n{outcome.details}")
            return outcome.node
        keep_alive()
        time.sleep(0.1)
    task.close()
    raise AssertionError(f"{task.title} did not finish in {timeout:.0f} s")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def train_selftest(
    logic: Any, *, say: Callable[[str], None], keep_alive: Callable[[], None]
) -> Any:
    """The IPv2Train self-test's steps: a phantom dataset, two training steps, the curve.

    Returns the finished run. Like :func:`denoise_selftest`, kept out of the module file
    so the same steps run under pytest.
    """
    import tempfile
    import time

    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe

    say("Building a phantom dataset")
    root = Path(tempfile.mkdtemp(prefix="ipv2-selftest-"))
    pairs = write_phantom_pairs(root / "pairs")
    build_dataset(pairs, root / "dataset", BuildConfig(recipe=Recipe.for_strategy("ipv1")))

    say("Training two steps in a background process")
    p = logic.getParameterNode()
    p.datasetFolder, p.outputFolder = root / "dataset", root / "run"
    p.architecture, p.baseChannels, p.cropSize, p.maxSteps, p.device = ("redcnn", 8, 32, 2, "cpu")
    run = logic.startTraining(p)
    curve = logic.curveFor(run)
    deadline = time.monotonic() + 300
    while run.running and time.monotonic() < deadline:
        curve.add(run.poll())
        keep_alive()
        time.sleep(0.2)
    curve.add(run.poll())
    _check(run.job.wait(timeout=30) == 0, "\n".join(run.job.log_tail(50)))
    _check(len(curve.rows()) > 0, "the training curve has no rows")
    _check(logic.modelToUse(run) is not None, "the run left no model to use")
    return run
