"""Purified volumes and the IPv2 fusion preview through ``ipv2 purify`` in a background Job.

The IPv2 training input needs the physical simulation of the NDCT (seconds per slice on a
CPU) and the IPv2 label needs the weak denoiser (a network): run in Slicer's own process
they froze the application for minutes with only a wait cursor (issue 13, item 10). Here
the panel writes the pair (or the one slice a preview shows) into a work folder, starts
``ipv2 purify`` on it as a :class:`ipv2.runtime.jobs.Job` (progress per simulated or
denoised slice, Cancel through the stop-request file), and loads what the command wrote
once it has finished. The IPv1 fusions need neither and stay instant, in-process.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.json_files import read_json_object
from ipv2.runtime.jobs import Job
from ipv2.slicer.nodes import node_from_volume, output_name, scene_or_default, volume_from_node
from ipv2.slicer.own_outputs import mark_output, mark_preview, reusable_preview
from ipv2.slicer.segments import update_mask_segmentation

OUTPUT_FILES = {"input": "train_input.nrrd", "label": "eval_label.nrrd"}
_TITLES = {"input": "training input", "label": "label"}


@dataclass
class PurifyRun:
    """A started ``ipv2 purify`` job, its work folder and what the panel asked of it."""

    job: Job
    workdir: Path
    strategy: str
    source_id: str  # the uLDCT node the outputs are named after
    only: str | None = None  # "input" or "label" for a preview, None for both
    first_slice: int | None = None  # a preview's slice; None for the whole volume

    @property
    def out_dir(self) -> Path:
        return self.workdir / "out"


def purify_command(
    strategy: str, recipe_options: dict[str, Any], weak_checkpoint: str | None
) -> list[str]:
    """``ipv2 purify``'s options for the panel's strategy, texture mix and mask settings."""
    masks = recipe_options.get("masks")
    command = ["--strategy", strategy, "--T", str(recipe_options.get("t", 0.1))]
    if masks is not None:
        command += ["--mask-variant", str(masks.variant)]
        command += ["--opening-radius", str(masks.opening_radius)]
        if masks.threshold_hu is not None:
            command += ["--threshold-hu", str(masks.threshold_hu)]
    if weak_checkpoint:
        command += ["--weak-denoiser", weak_checkpoint]
    return command


def start_purify(
    u_node: Any,
    n_node: Any,
    options: list[str],
    *,
    strategy: str,
    only: str | None = None,
    k: int | None = None,
    workdir: str | None = None,
    python: str | None = None,
) -> PurifyRun:
    """Write U and N (or their slice ``k``) to a work folder and start ``ipv2 purify``."""
    from ipv2.io.volumes import write_volume
    from ipv2.slicer.workflows import check_pair, slicer_python

    if n_node is None:
        raise InputError("purification needs the NDCT volume of the same patient")
    check_pair(u_node, n_node)
    u, n = volume_from_node(u_node), volume_from_node(n_node)
    if k is not None:
        u, n = u.slices(k, k + 1), n.slices(k, k + 1)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ipv2-purify-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:  # a failed write or start leaves no copy of the patient's scans behind
        command = ["purify", "--uldct", str(write_volume(u, folder / "uldct.nrrd"))]
        command += ["--ndct", str(write_volume(n, folder / "ndct.nrrd"))]
        command += ["--out-dir", str(folder / "out"), *options]
        if only is not None:
            command += ["--only", only]
        job = Job.engine(command, python=python or slicer_python()).start()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return PurifyRun(job, folder, strategy, u_node.GetID(), only=only, first_slice=k)


def load_volumes(run: PurifyRun, scene: Any | None = None) -> dict[str, Any]:
    """The finished run's outputs as new nodes named after the uLDCT, like ``purify_nodes``.

    ``{"training_input": node, "evaluation_label": node, "masks": segmentation,
    "warnings": [...]}``; an output the command left out is missing from the dict.
    """
    from ipv2.io.volumes import read_volume

    scene = scene_or_default(scene)
    source = _source(run, scene)
    report = read_json_object(run.out_dir / "report.json", what="the purification report")
    outputs = report.get("outputs", {})
    label = run.strategy.upper()
    out: dict[str, Any] = {"warnings": [str(w) for w in report.get("warnings", [])]}
    if "masks" not in outputs:
        raise InputError("the purification report lists no masks (see the log)")
    # Everything read before any node is made: a bad file leaves the scene as it was.
    labels = read_volume(run.out_dir / outputs["masks"]).array
    titles = {"training_input": "training input", "evaluation_label": "label"}
    volumes = {key: read_volume(run.out_dir / outputs[key]) for key in titles if key in outputs}
    for key, volume in volumes.items():
        node = node_from_volume(volume, output_name(source, f"{label} {titles[key]}"), scene)
        out[key] = mark_output(node, titles[key])
    out["masks"] = update_mask_segmentation(
        {"background": labels == 0, "body": labels == 1, "lung": labels == 2},
        source,
        scene=scene,
        name=output_name(source, f"{label} masks"),
    )
    discard(run)
    return out


def load_preview(run: PurifyRun, name: str, scene: Any | None = None) -> Any:
    """A finished preview's one output in the reused node ``name`` (created if missing)."""
    from ipv2.io.volumes import read_volume

    assert run.only is not None, "a preview asks for one output"
    scene = scene_or_default(scene)
    path = run.out_dir / OUTPUT_FILES[run.only]
    if not path.is_file():
        raise InputError(f"the purification wrote no {_TITLES[run.only]} (see the log)")
    volume = read_volume(path)
    node = node_from_volume(volume, name, scene=scene, node=reusable_preview(scene, name))
    mark_preview(node, name)
    discard(run)
    return node


def discard(run: PurifyRun) -> None:
    """Stop the job if it still runs and remove its work folder (copies of the pair)."""
    from ipv2.slicer.workflows import discard_work

    discard_work(run.job, run.workdir)


def _source(run: PurifyRun, scene: Any) -> Any:
    source = scene.GetNodeByID(run.source_id)
    if source is None:
        raise InputError("the uLDCT volume was removed from the scene while it was purified")
    return source
