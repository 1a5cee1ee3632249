"""Node-level workflows the IPv2Denoise Logic calls: preview, purify, denoise.

Each function takes MRML nodes and plain options, does the work through the engine, and
puts results back into nodes. The live preview works on a single slice taken straight
from the node's voxel buffer (no copy of the volume), so it stays interactive; heavier
work (whole-volume purification with simulation, denoising) either reports progress or
runs as a :class:`ipv2.runtime.jobs.Job` in a child process.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import vtk
from vtk.util import numpy_support

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.runtime.jobs import Job
from ipv2.slicer.nodes import node_from_volume, output_name, scene_or_default, volume_from_node
from ipv2.slicer.own_outputs import mark_output, mark_preview
from ipv2.slicer.segments import update_mask_segmentation

FUSION_KINDS = ("ipv1-input", "ipv1-label", "ipv2-input", "ipv2-label")


def voxels(node: Any) -> npt.NDArray[Any]:
    """The node's voxel buffer as a (z, y, x) numpy view (no copy)."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError("select a volume that holds voxel data")
    x, y, z = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z, y, x)


def slice_index_at(node: Any, ras: tuple[float, float, float]) -> int:
    """The axial (k) index of ``node`` nearest to the RAS point (e.g. a slice view's centre)."""
    m = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(m)
    ijk = m.MultiplyPoint((*ras, 1.0))
    depth = node.GetImageData().GetDimensions()[2]
    return int(np.clip(round(ijk[2]), 0, depth - 1))


def _slice(node: Any, k: int) -> npt.NDArray[np.float32]:
    vox = voxels(node)
    if not 0 <= k < vox.shape[0]:
        raise InputError(f"slice {k} is outside the volume (0..{vox.shape[0] - 1})")
    return np.asarray(vox[k], dtype=np.float32)


def check_pair(u_node: Any, n_node: Any | None) -> None:
    if n_node is None:
        return
    if voxels(u_node).shape != voxels(n_node).shape:
        raise InputError(
            f"uLDCT {voxels(u_node).shape} and NDCT {voxels(n_node).shape} differ in shape; "
            "resample the NDCT onto the uLDCT first (e.g. Resample Scalar/Vector/DWI Volume)"
        )


@dataclass
class SlicePreview:
    """What one live preview computed, for the panel's status line."""

    slice_index: int
    seconds: float
    lung_fraction: float
    background_fraction: float
    thresholds_hu: list[float] = field(default_factory=list)
    segmentation: Any = None

    def describe(self) -> str:
        otsu = ", ".join(f"{t:.0f}" for t in self.thresholds_hu) or "none"
        return (
            f"Slice {self.slice_index}: lung {100 * self.lung_fraction:.1f}%, background "
            f"{100 * self.background_fraction:.1f}%, threshold {otsu} HU "
            f"({1000 * self.seconds:.0f} ms)"
        )


def preview_slice(
    u_node: Any,
    n_node: Any | None,
    k: int,
    *,
    options: Any = None,
    segmentation: Any | None = None,
) -> SlicePreview:
    """Masks of slice ``k`` shown as the segmentation's background/body/lung segments.

    Without an NDCT the masks are those of the uLDCT alone (``N = U``), which is what a
    clinician needs to judge the thresholds on the scan being denoised. The
    ``anatomical`` variant needs the whole volume (3D connectivity): it is computed once
    per (volume pair, options) and cached (:mod:`ipv2.slicer.mask_cache`).
    """
    from ipv2.purification.masks import MaskOptions, purification_masks

    t0 = time.perf_counter()
    check_pair(u_node, n_node)
    u = _slice(u_node, k)
    n = _slice(n_node, k) if n_node is not None else u
    opts = options or MaskOptions()
    if opts.variant == "anatomical":  # lungs by 3D connectivity: whole volume, cached
        from ipv2.slicer.mask_cache import PREVIEW_CACHE

        cached = PREVIEW_CACHE.for_nodes(u_node, n_node, opts, voxels=voxels)
        parts, otsu = cached.slice_masks(k), cached.thresholds[k : k + 1]
    else:
        masks = purification_masks(u, n, opts)
        body = masks.body & ~masks.lung
        parts = {"background": masks.background, "body": body, "lung": masks.lung}
        otsu = masks.u.dark.thresholds
    segmentation = update_mask_segmentation(parts, u_node, segmentation=segmentation, first_slice=k)
    thresholds = [float(t) for t in otsu if np.isfinite(t)]
    return SlicePreview(
        slice_index=k,
        seconds=time.perf_counter() - t0,
        lung_fraction=float(parts["lung"].mean()),
        background_fraction=float(parts["background"].mean()),
        thresholds_hu=thresholds,
        segmentation=segmentation,
    )


def masks_for_volume(
    u_node: Any,
    n_node: Any | None,
    options: Any = None,
    *,
    segmentation: Any | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 16,
) -> Any:
    """All slices' masks into the segmentation, in chunks so progress can be shown."""
    from ipv2.purification.masks import MaskOptions, purification_masks

    check_pair(u_node, n_node)
    u_all = voxels(u_node)
    n_all = voxels(n_node) if n_node is not None else u_all
    depth = u_all.shape[0]
    if getattr(options, "variant", "paper") == "anatomical":
        chunk = depth  # lungs by 3D connectivity: the whole volume at once
    parts: dict[str, list[npt.NDArray[np.bool_]]] = {"background": [], "body": [], "lung": []}
    for start in range(0, depth, chunk):
        stop = min(depth, start + chunk)
        m = purification_masks(u_all[start:stop], n_all[start:stop], options or MaskOptions())
        parts["background"].append(m.background)
        parts["body"].append(m.body & ~m.lung)
        parts["lung"].append(m.lung)
        if progress is not None:
            progress(stop, depth)
    full = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return update_mask_segmentation(full, u_node, segmentation=segmentation)


def fusion_slice(
    u_node: Any,
    n_node: Any,
    k: int,
    *,
    kind: str,
    recipe_options: dict[str, Any] | None = None,
    weak_checkpoint: str | None = None,
    dose: float = 0.02,
) -> Volume:
    """One purified slice (``kind`` in :data:`FUSION_KINDS`) as a depth-1 volume at slice k.

    IPv2 inputs simulate ``S = sim(N)`` on this slice; IPv2 labels need the weak
    denoiser's checkpoint for ``W = weak(U)``. The slice goes through the same pipeline
    as a whole-volume run, asked for the one output shown.
    """
    from ipv2.purification.pipeline import purify_pair
    from ipv2.purification.recipe import Recipe

    if kind not in FUSION_KINDS:
        raise InputError(f"fusion kind must be one of {FUSION_KINDS}, got {kind!r}")
    if n_node is None:
        raise InputError("the fusion preview needs the NDCT volume of the same patient")
    check_pair(u_node, n_node)
    strategy, what = kind.split("-")
    recipe = Recipe.for_strategy(strategy, **(recipe_options or {}))
    u = volume_from_node(u_node).slices(k, k + 1)
    n = u.with_array(_slice(n_node, k)[np.newaxis])
    if what == "label" and recipe.needs_weak and not weak_checkpoint:
        raise InputError(
            "the IPv2 label needs the weak denoiser (Module 3, Remove Noise): choose its "
            "checkpoint folder, or preview the IPv1 label"
        )
    result = purify_pair(
        u,
        n,
        recipe,
        **_sources(recipe, dose, weak_checkpoint),
        build_input=what == "input",
        build_label=what == "label",
        require_all=True,
    )
    out = result.training_input if what == "input" else result.evaluation_label
    assert out is not None  # require_all: a missing source raised above
    return out


def _sources(recipe: Any, dose: float, weak_checkpoint: str | None) -> dict[str, Any]:
    """The simulator and weak denoiser for the pipeline, loaded only if the recipe uses them."""
    from ipv2.inference.weak_denoiser import load_weak_denoiser
    from ipv2.simulation.simulator import Simulator

    return {
        "simulate": Simulator.for_dose(dose) if recipe.needs_simulated else None,
        "weak_denoise": (
            load_weak_denoiser(weak_checkpoint) if recipe.needs_weak and weak_checkpoint else None
        ),
    }


def show_volume(
    volume: Volume, name: str, node: Any | None = None, *, scene: Any | None = None
) -> Any:
    """Put a (preview) volume into a reused node, keeping the display settings."""
    return mark_preview(node_from_volume(volume, name, scene=scene, node=node), name)


def purify_nodes(
    u_node: Any,
    n_node: Any,
    *,
    strategy: str = "ipv2",
    modules: frozenset[int] | None = None,
    recipe_options: dict[str, Any] | None = None,
    simulated_node: Any | None = None,
    weak_checkpoint: str | None = None,
    dose: float = 0.02,
    scene: Any | None = None,
) -> dict[str, Any]:
    """Whole-volume purification into new nodes named after the uLDCT.

    Returns ``{"training_input": node, "evaluation_label": node, "masks": segmentation}``
    (an output whose source is missing is left out and listed under ``"warnings"``).
    """
    from ipv2.purification.pipeline import purify_pair
    from ipv2.purification.recipe import Recipe

    scene = scene_or_default(scene)
    check_pair(u_node, n_node)
    recipe = Recipe.for_strategy(strategy, modules, **(recipe_options or {}))
    u, n = volume_from_node(u_node), volume_from_node(n_node)
    sim = volume_from_node(simulated_node) if simulated_node is not None else None
    sources = _sources(recipe, dose, weak_checkpoint)
    result = purify_pair(u, n, recipe, simulated=sim, **sources)
    label = strategy.upper()
    out: dict[str, Any] = {"warnings": list(result.report.get("warnings", []))}  # type: ignore[call-overload]
    if result.training_input is not None:
        out["training_input"] = mark_output(
            node_from_volume(
                result.training_input, output_name(u_node, f"{label} training input"), scene
            ),
            "training input",
        )
    if result.evaluation_label is not None:
        out["evaluation_label"] = mark_output(
            node_from_volume(result.evaluation_label, output_name(u_node, f"{label} label"), scene),
            "label",
        )
    m = result.masks
    out["masks"] = update_mask_segmentation(
        {"background": m.background, "body": m.body & ~m.lung, "lung": m.lung},
        u_node,
        scene=scene,
        name=output_name(u_node, f"{label} masks"),
    )
    return out


def slicer_python() -> str:
    """The Python that child jobs run: Slicer's launcher inside Slicer, else this one.

    Jobs start the ``PythonSlicer`` launcher, not the ``python-real`` it runs. Starting
    python-real directly would mean rebuilding the launcher's environment: the paths,
    library paths and variables of ``PythonSlicerLauncherSettings.ini`` merged with
    Slicer's own ``SlicerLauncherSettings.ini`` (``ADDITIONAL_SETTINGS_FILEPATH``) and the
    revision-specific user settings that list installed extensions (Slicer
    ``SuperBuild/python_configure_python_launcher.cmake``; the merge is commontk/AppLauncher
    ``Base/ctkAppLauncherSettings.cpp``), and keeping that in step with every Slicer
    release. Not cheap, and not needed: ``runtime.jobs.Job`` stops the engine through a
    stop-request file and kills it by its own announced pid, so the launcher in between
    no longer matters.
    """
    return shutil.which("PythonSlicer") or sys.executable


@dataclass
class DenoiseRun:
    """A denoising job and the files it reads and writes."""

    job: Job
    input_path: Path
    output_path: Path
    input_node_id: str
    workdir: Path


@dataclass(frozen=True)
class DenoiseSettings:
    """How to run ``ipv2 denoise``; None means the model's (or the engine's) default."""

    steps: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    half: bool = False

    def arguments(self) -> list[str]:
        args = ["--device", self.device]
        if self.steps:
            args += ["--steps", str(self.steps)]
        if self.batch_size:
            args += ["--batch-size", str(self.batch_size)]
        if self.half:
            args.append("--half")
        return args


def start_denoise(
    u_node: Any,
    model: str,
    settings: DenoiseSettings | None = None,
    *,
    workdir: str | None = None,
    python: str | None = None,
) -> DenoiseRun:
    """Write the uLDCT to a work folder and start ``ipv2 denoise`` on it as a Job."""
    from ipv2.io.checkpoints import read_metadata
    from ipv2.io.volumes import write_volume

    read_metadata(model)  # refuse a non-model before doing any work
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ipv2-denoise-"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "denoised.nrrd"
    try:  # a failed write or start leaves no copy of the patient's scan behind
        source = write_volume(volume_from_node(u_node), folder / "input.nrrd")
        command = ["denoise", "--input", str(source), "--model", str(model), "--out", str(target)]
        command += (settings or DenoiseSettings()).arguments()
        job = Job.engine(command, python=python or slicer_python()).start()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return DenoiseRun(job, source, target, input_node_id=u_node.GetID(), workdir=folder)


def finish_denoise(
    run: DenoiseRun, scene: Any | None = None, *, keep_files: bool = False, node: Any | None = None
) -> Any:
    """Load a finished job's result into ``node``, else a new node named after its input."""
    from ipv2.io.volumes import read_volume

    scene = scene_or_default(scene)
    if run.job.returncode != 0 or not run.output_path.exists():
        reason = run.job.error_message or "\n".join(run.job.log_tail(20))
        raise InputError(f"denoising did not finish: {reason}")
    source = scene.GetNodeByID(run.input_node_id)
    name = output_name(source, "IPv2 denoised") if source is not None else "IPv2 denoised"
    node = node_from_volume(read_volume(run.output_path), name, scene, node=node)
    mark_output(node, "denoised")
    if not keep_files:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return node


def denoise_node(
    u_node: Any,
    model: str,
    settings: DenoiseSettings | None = None,
    *,
    timeout: float | None = None,
    scene: Any | None = None,
) -> Any:
    """Denoise a volume node through a Job and wait for it (for scripts and the console).

    The panel uses :func:`start_denoise` / :func:`finish_denoise` instead, polling the
    job from a timer so the GUI stays responsive.
    """
    run = start_denoise(u_node, model, settings)
    try:
        run.job.wait(timeout=timeout)
    except BaseException:
        discard_denoise(run)
        raise
    try:
        return finish_denoise(run, scene)
    except InputError:
        discard_denoise(run)
        raise


def discard_denoise(run: DenoiseRun) -> None:
    """Remove a cancelled or failed run's work folder (it holds a copy of the volume)."""
    discard_work(run.job, run.workdir)


def discard_work(job: Job, folder: Path) -> None:
    """End ``job`` if it still runs and remove its work folder (copies of patient scans)."""
    if job.running:
        job.kill()
        job.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def model_summary(path: str) -> str:
    """One paragraph on a checkpoint for the panel: architecture, scheme, steps, window."""
    from ipv2.io.checkpoints import read_metadata

    meta = read_metadata(path)
    scheme = meta.get("scheme") or {}
    params = scheme.get("params") or {}
    purification = meta.get("purification") or {}
    modules = ", ".join(str(m) for m in purification.get("modules") or []) or "none"
    window = meta.get("window") or ["?", "?"]
    metrics = meta.get("metrics") or {}
    extra = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return (
        f"{meta.get('arch')} network, {scheme.get('name')} scheme"
        f"{', ' + str(params.get('steps')) + ' steps' if params.get('steps') else ''}; "
        f"HU window [{window[0]}, {window[1]}]; trained with {purification.get('strategy') or '?'} "
        f"(modules {modules}); step {meta.get('step')}, engine {meta.get('engine_version')}"
        + (f"; validation: {extra}" if extra else "")
    )


def mask_options(
    variant: str = "paper", fixed_threshold: float | None = None, opening_radius: int = 1
) -> Any:
    """Mask options from panel values (``fixed_threshold`` None means Otsu)."""
    from ipv2.purification.masks import MaskOptions

    return MaskOptions(
        variant=variant,  # type: ignore[arg-type]  # MaskOptions validates it
        threshold_hu=fixed_threshold,
        opening_radius=opening_radius,
    )


def show_in_lung_window(node: Any) -> None:
    """Lung window (W 1500, L -600), the way radiologists read noise in lungs and air."""
    display = node.GetDisplayNode() if node is not None else None
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(1500.0, -600.0)
