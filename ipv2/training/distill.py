"""Distillation: a small one-step student that reproduces a slow multi-step teacher.

A sampled model (FFM at 10 steps, CoreDiff, Cold Diffusion) costs its step count in
network calls per slice; ``ipv2 distill`` trains a narrower FFM to produce in ``--steps``
(default 1) calls what the teacher produces in its own (its ``--steps auto`` choice, or
its configured steps without a steps curve), on the very inputs the teacher was trained
on (the input kind its ``model.json`` records).

**Teacher targets once, not every step.** The teacher is by design the slow part: sampling
it inside every training step would multiply the student's training time by its step
count, and re-sample the same slices every epoch. Its outputs are computed once per
training slice into the run folder instead, each slice written atomically, so a stopped
or killed run keeps every finished slice and a ``--resume`` computes only the rest. The
finished targets form a small dataset view (``RUN/teacher-targets``: the source
manifest, the training inputs linked from the dataset, the teacher's outputs as the
kind ``teacher``, the validation split linked), so the ordinary trainer
(:func:`ipv2.training.loop.train`) trains the student on (input, teacher) pairs with
``train_kinds`` and validates it against the dataset's labels, with its crops,
checkpoints, exact resume and graceful stop, and no second training loop exists.

**The student samples with flow matching, not regression.** The teacher's map
``U -> T(U)`` is deterministic, so each training pair is a fixed coupling; at ``t = 0``
the student sees ``U`` itself, which determines its pair, so the flow loss's minimiser
there is exactly ``T(U) - U`` and one Euler step lands on ``T(U)`` (rectified flow's
"reflow"). By default (``--times sampler``) the loss is taken only at the times the
student's own sampler visits (``t = 0`` for one step): trained at uniform times with the
teacher's budget, a one-step student on the demo phantom came out 1.20x its teacher's
RMSE against the truth, most of its training spent on times it never visits.
``--times uniform`` keeps every time, so ``--steps 2`` stays meaningful. Either way the
student is an ordinary sampled FFM that ``ipv2 denoise`` runs unchanged, training
measures its steps curve (``--steps auto`` picks what was measured best), and it can be
distilled again.

**What the student says about itself.** Its ``model.json`` (final and best) takes the
teacher's HU window (the view's manifest carries it, so the student also trains in it),
purification metadata, card licence and intended use, and records ``role: student``,
the teacher's name, path and weights' SHA-256, and, measured at the end on the dataset's
validation split, both models' RMSE in HU against the labels at the steps each is
sampled with (``distill``), so a user sees at once what the speed costs.

Run folder: ``distill.json`` (the teacher, dataset and student settings, read back by
``--resume``), ``teacher-targets/`` (the view, with ``.slices/`` holding finished slices
of unfinished cases) and ``student/`` (an ``ipv2 train`` run folder; its ``final/`` is the
student).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ipv2.core.devices import resolve_device
from ipv2.core.errors import CancelledError, InputError, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.core.json_files import read_json_object
from ipv2.data.training_pairs import (
    DatasetInfo,
    SlicePairs,
    available_kinds,
    pick_kind,
    read_dataset_info,
)
from ipv2.inference.denoise import DenoiseOptions, SliceRunner, denoise_array, sampler_steps
from ipv2.inference.model_card import training_card
from ipv2.inference.steps_auto import one_pass
from ipv2.io.atomic import atomic_file, check_new_output_dir, write_json_atomic
from ipv2.io.checkpoints import META, Loaded, load_checkpoint, read_metadata
from ipv2.models.registry import checked_hparams
from ipv2.runtime.run_lock import LOCK_NAME, RunLock
from ipv2.runtime.stop_requests import StopRequest
from ipv2.training.budget import MAX_SLICES
from ipv2.training.config import TrainConfig
from ipv2.training.loop import apply_torch_threads, train
from ipv2.training.summary import duration
from ipv2.training.validate import ValidationStopped, Validator, validation_indices

FloatArray = npt.NDArray[np.float32]

RECORD = "distill.json"
TARGETS = "teacher-targets"
STUDENT = "student"
TEACHER_KIND = "teacher"
PENDING = ".slices"  # finished slices of cases not yet assembled, inside TARGETS
FORMAT = "ipv2-distill"
FORMAT_VERSION = 1
# Slices sampled per call of the teacher: small enough that a stop loses little work.
CHUNK = 8
# The FFM hyper-parameters a student inherits from its teacher when the teacher has them.
_INHERITED = ("in_channels", "mults", "dropout")
# Fields a --resume may change: budgets, device and threads, as ``ipv2 train --resume``.
RESUME_OVERRIDABLE = ("epochs", "max_steps", "max_time", "device", "threads")
_TRAINER_CONTINUE = ("to continue:", "to train longer:")


@dataclass
class DistillConfig:
    """What ``ipv2 distill`` needs; see ``ipv2 distill --help`` for each option."""

    teacher: str
    data: str
    out: str
    base: int = 16
    steps: int = 1
    times: str = "sampler"  # train at the student's sampler times (see ipv2.schemes.flow)
    crop: int | None = None
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    max_steps: int = 0
    max_time: float = 0.0
    val_limit: int | None = None  # None: training's own sizing, MAX_SLICES for the comparison
    val_every: int | None = None  # epochs between the student's validations (training's default)
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def validate(self) -> None:
        checks = [
            (self.base >= 1, f"--base must be >= 1, got {self.base}"),
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (
                self.times in ("sampler", "uniform"),
                f"--times: sampler or uniform, not {self.times}",
            ),
            (self.val_limit is None or self.val_limit >= 0, "--val-limit must be >= 0"),
            (self.val_every is None or self.val_every >= 0, "--val-every must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


def resume_command(out: str | Path) -> str:
    import shlex

    return f"ipv2 distill --resume --out {shlex.quote(str(out))}"


# ---------------------------------------------------------------------------- the plan


def check_teacher(path: str | Path) -> dict[str, Any]:
    """The teacher's ``model.json``, refused unless it is a sampled model."""
    meta = read_metadata(path)
    if one_pass(meta):
        role = meta.get("role") or "denoiser"
        raise InputError(
            f"teacher {path} is a one-pass model ({meta.get('arch')} network, regression "
            f"scheme, role {role}): it has no sampler steps to distil; give a sampled model "
            "(flow, colddiff or corediff) trained with ipv2 train"
        )
    return meta


def open_dataset(path: str | Path) -> DatasetInfo:
    root = Path(path)
    if not root.exists():
        raise InputError(
            f"dataset {root} does not exist; give a folder built with ipv2 build-dataset "
            "(or the authors' PNG layout)"
        )
    return read_dataset_info(root)


def input_kind(meta: dict[str, Any], info: DatasetInfo) -> str:
    """The kind the teacher was trained on (its ``train_kinds``), else training's default."""
    recorded = meta.get("train_kinds")
    if isinstance(recorded, list) and recorded and isinstance(recorded[0], str):
        kind = recorded[0]
        have = available_kinds(info, "train")
        if kind not in have:
            raise InputError(
                f"the teacher was trained on {kind!r} inputs, but the training split of "
                f"{info.root} holds {have or 'nothing'}; distil on a dataset built like the "
                "teacher's"
            )
        return kind
    return pick_kind(info, "train", ["input", "uldct"])


def validation_kinds(meta: dict[str, Any], info: DatasetInfo) -> list[str]:
    """(input, label) kinds of the validation split, as the teacher's training chose them."""
    if not available_kinds(info, "val"):
        return []
    config = meta.get("config")
    recorded = config.get("val_kinds") if isinstance(config, dict) else None
    have = available_kinds(info, "val")
    if isinstance(recorded, list) and len(recorded) == 2 and all(k in have for k in recorded):
        return [str(recorded[0]), str(recorded[1])]
    return [pick_kind(info, "val", ["uldct", "input"]), pick_kind(info, "val", ["label", "ndct"])]


def student_hparams(teacher: dict[str, Any], base: int) -> dict[str, Any]:
    """The FFM at ``base``, shaped like the teacher where the teacher has FFM's parameters."""
    hparams = teacher.get("hparams")
    inherited = {k: hparams[k] for k in _INHERITED if isinstance(hparams, dict) and k in hparams}
    return {**inherited, "base": int(base)}


def new_record(cfg: DistillConfig, teacher: Loaded, info: DatasetInfo) -> dict[str, Any]:
    """``distill.json``: everything a ``--resume`` needs and checks, fixed at the start."""
    meta = teacher.meta
    choice = sampler_steps(teacher, "auto")
    low = input_kind(meta, info)
    out = Path(cfg.out)
    student = TrainConfig(
        data=str((out / TARGETS).resolve()),
        output=str((out / STUDENT).resolve()),
        model="ffm",
        scheme="flow",
        model_params=student_hparams(meta, cfg.base),
        scheme_params={"steps": int(cfg.steps), "times": cfg.times},
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        crop=cfg.crop,
        val_limit=cfg.val_limit,
        val_every=cfg.val_every,
        max_steps=cfg.max_steps,
        max_time=cfg.max_time,
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        train_kinds=[low, TEACHER_KIND],
        val_kinds=validation_kinds(meta, info),
    )
    student.validate()
    _check_shape(student, info, low)
    weights = meta.get("weights")
    sha = weights.get("sha256") if isinstance(weights, dict) else None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": {
            "name": teacher_name(teacher.path),
            "path": str(teacher.path.resolve()),
            "sha256": sha,
            "arch": meta.get("arch"),
            "scheme": teacher.scheme.name,
            "steps": int(choice.steps),
            "steps_how": choice.how,
            "steps_note": choice.note,
            "role": meta.get("role") or "denoiser",
            "window": teacher.window.to_json(),
            "purification": meta.get("purification"),
            "card": meta.get("card") if isinstance(meta.get("card"), dict) else {},
        },
        "data": str(info.root.resolve()),
        "data_fingerprint": info.fingerprint,
        "input_kind": low,
        "val_kinds": list(student.val_kinds),
        "val_limit": cfg.val_limit,
        "student": student.to_json(),
    }


def _check_shape(student: TrainConfig, info: DatasetInfo, low: str) -> None:
    """Refuse a crop or slice size the student's strides cannot take before the teacher
    spends its time, not after (the trainer would refuse them too, but only then)."""
    stride = 2 ** len(checked_hparams("ffm", student.model_params)["mults"])
    first = _cases(info, "train", low)[0].array
    h, w = int(first.shape[1]), int(first.shape[2])
    crop = student.crop
    if crop is not None and (crop > min(h, w) or crop % stride):
        raise InputError(
            f"--crop {crop} must be a multiple of {stride} (the student's stride) and at most "
            f"the training slices' {h} x {w}"
        )
    if crop is None and (h % stride or w % stride):
        raise InputError(
            f"training slices are {h} x {w}, not multiples of {stride} (the student's "
            f"stride); pass --crop with a multiple of {stride}"
        )


def teacher_name(folder: Path) -> str:
    """A name that tells teachers apart: ``RUN/final`` rather than a bare ``final``.

    Training names its model folders ``final``, ``best`` and ``checkpoints/step-N``; an
    installed model's folder is its own name.
    """
    folder = folder.resolve()
    if folder.name in ("final", "best"):
        return f"{folder.parent.name}/{folder.name}"
    if folder.name.startswith("step-") and folder.parent.name == "checkpoints":
        return f"{folder.parent.parent.name}/checkpoints/{folder.name}"
    return folder.name


def read_record(out: Path) -> dict[str, Any]:
    path = out / RECORD
    if not path.is_file():
        raise InputError(
            f"cannot resume: {out} is not a distillation run folder ({RECORD} missing)"
        )
    record = read_json_object(path, what=f"a distillation record ({RECORD})")
    if record.get("format") != FORMAT or not isinstance(record.get("teacher"), dict):
        raise InputError(f"{path} is not an ipv2 distillation record; it is damaged")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} was written by a newer ipv2; update ipv2 to resume it")
    return record


def student_config(record: dict[str, Any], out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The student's training config: its run's own when it has started, else the record's.

    Paths follow the run folder, wherever it lives now (a copied run writes into the copy).
    """
    saved = out / STUDENT / "config.json"
    cfg = TrainConfig.load(saved) if saved.is_file() else TrainConfig.from_json(record["student"])
    cfg.data = str((out / TARGETS).resolve())
    cfg.output = str((out / STUDENT).resolve())
    for key, value in overrides.items():
        if key not in RESUME_OVERRIDABLE:
            raise InputError(f"{key} cannot change when a distillation resumes")
        if value is not None:
            setattr(cfg, key, value)
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class _Case:
    """One training or validation case of the source: its HU stack and file, if any."""

    name: str
    array: FloatArray  # (z, y, x), memory-mapped for .npy datasets
    source: Path | None  # the .npy file (linked into the view); None for decoded PNGs


def _cases(info: DatasetInfo, split: str, kind: str) -> list[_Case]:
    pairs = SlicePairs(info, split, kind, kind)
    sources: list[Path | None] = [
        info.root / split / kind / f"{name}.npy" if info.layout == "npy" else None
        for name in pairs.names
    ]
    return [_Case(n, a, s) for n, a, s in zip(pairs.names, pairs.low, sources, strict=True)]


def _save_npy(path: Path, array: npt.ArrayLike) -> None:
    """One ``.npy`` file, complete or absent (a temporary name renamed into place)."""
    with atomic_file(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))


def _place(case: _Case, target: Path) -> None:
    """Put ``case`` into the view: a link to its ``.npy`` (a copy where links fail), or an array."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if case.source is None:
        if not target.is_file():
            _save_npy(target, case.array)
        return
    source = case.source.resolve()
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.symlink(source, target)
    except OSError:  # no symlinks here (Windows without the privilege): a hard link or a copy
        try:
            os.link(source, target)
        except OSError:
            with atomic_file(target, suffix=".npy") as tmp:
                shutil.copyfile(source, tmp)


def write_view_manifest(view: Path, info: DatasetInfo, record: dict[str, Any]) -> None:
    """The view's manifest: the source's, in the teacher's window (unchanged if they agree).

    Identical manifests give identical fingerprints, so a student of a teacher trained on
    this dataset in its own window records the source dataset's fingerprint.
    """
    window = record["teacher"]["window"]
    if info.manifest:
        manifest = dict(info.manifest)
        if [float(v) for v in manifest.get("window_hu", window)] != [float(v) for v in window]:
            manifest["window_hu"] = window
    else:  # the authors' PNG layout has none: describe the view that replaces it
        purification = record["teacher"].get("purification") or {}
        manifest = {
            "format": "ipv2-dataset",
            "format_version": 1,
            "window_hu": window,
            "strategy": purification.get("strategy"),
            "modules": purification.get("modules") or [],
            "source": str(info.root),
            "cases": [],
        }
    path = view / "manifest.json"
    if path.is_file() and read_json_object(path, what="the view's manifest") == manifest:
        return
    write_json_atomic(path, manifest)


@dataclass
class TargetsResult:
    """How the teacher targets stand after :func:`compute_targets`."""

    slices: int
    cached: int  # finished before this call
    computed: int
    stopped: str | None = None  # the stop reason, when a stop request ended the call


def compute_targets(
    out: Path,
    info: DatasetInfo,
    record: dict[str, Any],
    *,
    teacher: Loaded,
    device: torch.device,
    reporter: Reporter,
    stop: StopRequest,
) -> TargetsResult:
    """Sample the teacher on every training input missing from the cache; build the view.

    Slices are written one by one as they finish (``.slices/<case>/<z>.npy``), and a case's
    slices are assembled into ``train/teacher/<case>.npy`` once all are there, so the
    view only ever holds complete cases and a restart redoes at most one chunk.
    """
    view = out / TARGETS
    low = record["input_kind"]
    steps = int(record["teacher"]["steps"])
    view.mkdir(exist_ok=True)
    _sweep(view)
    write_view_manifest(view, info, record)
    for kind in record["val_kinds"]:
        for case in _cases(info, "val", kind):
            _place(case, view / "val" / kind / f"{case.name}.npy")
    cases = _cases(info, "train", low)
    for case in cases:
        _place(case, view / "train" / low / f"{case.name}.npy")
    total = sum(int(c.array.shape[0]) for c in cases)
    runner = SliceRunner(teacher, device, steps, half=False)
    margin = runner.context  # neighbours a conditioned teacher reads around each slice
    options = DenoiseOptions(steps=steps, device=str(device))
    result = TargetsResult(slices=total, cached=0, computed=0)
    pending_root = view / PENDING
    for case in cases:
        target = view / "train" / TEACHER_KIND / f"{case.name}.npy"
        depth = int(case.array.shape[0])
        if _complete(target, case.array.shape):
            result.cached += depth
            continue
        pending = pending_root / case.name
        pending.mkdir(parents=True, exist_ok=True)
        missing = [z for z in range(depth) if not (pending / f"{z:05d}.npy").is_file()]
        result.cached += depth - len(missing)
        reporter.progress("teacher targets", result.cached + result.computed, total)
        for lo, hi in _runs(missing, CHUNK):
            if stop.requested:
                result.stopped = stop.reason
                return result
            a, b = max(0, lo - margin), min(depth, hi + margin)
            try:
                hu, _ = denoise_array(
                    np.asarray(case.array[a:b], dtype=np.float32),
                    teacher,
                    options,
                    cancel=lambda: stop.requested,
                    runner=runner,
                )
            except CancelledError:
                result.stopped = stop.reason
                return result
            for z in range(lo, hi):
                _save_npy(pending / f"{z:05d}.npy", hu[z - a])
            result.computed += hi - lo
            reporter.progress("teacher targets", result.cached + result.computed, total)
        stack = np.stack([np.load(pending / f"{z:05d}.npy") for z in range(depth)])
        target.parent.mkdir(parents=True, exist_ok=True)
        _save_npy(target, stack.reshape(case.array.shape))
        shutil.rmtree(pending, ignore_errors=True)
    with contextlib.suppress(OSError):
        pending_root.rmdir()
    return result


def _sweep(view: Path) -> None:
    """Remove temporary files a killed run left (``.NAME.XXXX.npy``, see ``atomic_file``).

    Finished files are never hidden, and the run folder's lock keeps other writers out,
    so whatever is hidden and ends in ``.npy`` here is an unfinished write.
    """
    for leftover in view.rglob(".*.npy"):
        if leftover.is_file():
            leftover.unlink()


def _complete(target: Path, shape: tuple[int, ...]) -> bool:
    """A finished case: its assembled file exists and has the input's shape."""
    if not target.is_file():
        return False
    try:
        return tuple(np.load(target, mmap_mode="r", allow_pickle=False).shape) == tuple(shape)
    except (OSError, ValueError):
        return False


def _runs(indices: list[int], size: int) -> Iterator[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` runs of sorted ``indices``, at most ``size`` long."""
    start = 0
    while start < len(indices):
        end = start + 1
        while end < len(indices) and indices[end] == indices[end - 1] + 1 and end - start < size:
            end += 1
        yield indices[start], indices[end - 1] + 1
        start = end


# ---------------------------------------------------------------------------- comparison


def _validator(
    loaded: Loaded, info: DatasetInfo, kinds: list[str], device: torch.device
) -> Validator:
    context = int(loaded.model.hparams.get("context", 0))  # type: ignore[call-overload]
    pairs = SlicePairs(info, "val", kinds[0], kinds[1], context=context)
    return Validator(pairs, window=loaded.window, device=device, autocast_dtype=None)


def _rmse_and_time(
    validator: Validator,
    loaded: Loaded,
    steps: int,
    *,
    indices: list[int],
    on_slice: Callable[[], None],
    should_stop: Callable[[], bool],
) -> tuple[float, float]:
    """RMSE in HU over ``indices`` (both clipped to the window) and median seconds per slice."""
    window = loaded.window
    squared, pixels, seconds = 0.0, 0, []
    for done, index in enumerate(indices):
        if should_stop():
            raise ValidationStopped(done, len(indices))
        began = time.perf_counter()
        pred, label = validator.predict(loaded.model, loaded.scheme, index, steps=steps)
        seconds.append(time.perf_counter() - began)
        diff = np.clip(pred, window.low, window.high).astype(np.float64) - np.clip(
            label, window.low, window.high
        )
        squared += float(np.sum(diff * diff))
        pixels += diff.size
        on_slice()
    return math.sqrt(squared / max(pixels, 1)), float(np.median(seconds))


def compare(
    teacher: Loaded,
    student: Loaded,
    info: DatasetInfo,
    *,
    record: dict[str, Any],
    device: torch.device,
    reporter: Reporter,
    should_stop: Callable[[], bool],
) -> dict[str, Any] | None:
    """Teacher's and student's RMSE against the validation labels; None without a val split.

    Each model samples with the steps it is used with: the teacher's that made the targets,
    the student's ``--steps auto`` choice (what ``ipv2 denoise`` takes by default). Slices
    are spread evenly (``--val-limit``, at most 32 by default, 0 for all). ``ratio`` is the
    student's RMSE over the teacher's: above 1, the student is further from the labels.
    """
    kinds = record.get("val_kinds") or []
    if len(kinds) != 2:
        return None
    t_val = _validator(teacher, info, kinds, device)
    s_val = _validator(student, info, kinds, device)
    limit = record.get("val_limit")
    indices = validation_indices(len(t_val.pairs), MAX_SLICES if limit is None else int(limit))
    t_steps = int(record["teacher"]["steps"])
    s_steps = int(sampler_steps(student, "auto").steps)
    total, done = 2 * len(indices), 0

    def tick() -> None:
        nonlocal done
        done += 1
        reporter.progress("distill: compare", done, total)

    reporter.progress("distill: compare", 0, total)
    t_val.predict(teacher.model, teacher.scheme, indices[0], steps=1)  # warm-up, not timed
    s_val.predict(student.model, student.scheme, indices[0], steps=1)
    t_rmse, t_sec = _rmse_and_time(
        t_val, teacher, t_steps, indices=indices, on_slice=tick, should_stop=should_stop
    )
    s_rmse, s_sec = _rmse_and_time(
        s_val, student, s_steps, indices=indices, on_slice=tick, should_stop=should_stop
    )
    return {
        "teacher_rmse_hu": round(t_rmse, 3),
        "student_rmse_hu": round(s_rmse, 3),
        "ratio": round(s_rmse / t_rmse, 4) if t_rmse > 0 else None,
        "slices": len(indices),
        "val_kinds": list(kinds),
        "teacher_steps": t_steps,
        "student_steps": s_steps,
        "teacher_seconds_per_slice": round(t_sec, 4),
        "student_seconds_per_slice": round(s_sec, 4),
        "speedup": round(t_sec / s_sec, 2) if s_sec > 0 else None,
        "device": str(device),
        "error": "RMSE in HU against the validation labels, both clipped to the model's window",
    }


def annotate(
    folder: Path,
    record: dict[str, Any],
    figures: dict[str, Any] | None,
    *,
    manifest: dict[str, Any] | None = None,
) -> None:
    """Make a student checkpoint's ``model.json`` say what it is and whose student.

    ``model.json`` is not covered by the weights' hash, so rewriting it (atomically)
    leaves the checkpoint valid.
    """
    meta = read_metadata(folder)
    teacher = record["teacher"]
    card = dict(meta.get("card") or {})
    trained_on = training_card(
        record["data"], manifest, train_kinds=[record["input_kind"], TEACHER_KIND]
    )["trained_on"]
    card["trained_on"] = (
        f"{trained_on}; targets: teacher '{teacher['name']}' sampled in {teacher['steps']} steps"
    )
    # The student reproduces its teacher, so the teacher's terms of use are its terms too.
    for key in ("intended_use", "licence"):
        if teacher.get("card", {}).get(key):
            card[key] = teacher["card"][key]
    meta.update(
        role="student",
        teacher={k: teacher.get(k) for k in ("name", "path", "sha256", "arch", "scheme", "steps")},
        window=teacher["window"],
        purification=teacher.get("purification") or meta.get("purification"),
        data_fingerprint=record["data_fingerprint"],
        data_root=record["data"],
        train_kinds=[record["input_kind"], TEACHER_KIND],
        card=card,
    )
    if figures is not None:
        meta["distill"] = figures
    write_json_atomic(folder / META, meta)


# ---------------------------------------------------------------------------- the run


class _TrainerEvents(Reporter):
    """The trainer's events for the distillation's stream.

    Its ``done`` is dropped (the distillation ends with its own; ``train`` returns the
    same fields) and so are its closing lines that name ``ipv2 train --resume``, in favour
    of ``ipv2 distill --resume``; both stay in ``student/events.jsonl``.
    """

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "done":
            return
        if kind == "log" and str(fields.get("message", "")).startswith(_TRAINER_CONTINUE):
            return
        self.inner.emit(kind, **fields)

    def close(self) -> None:
        self.inner.close()  # finishes the trainer's progress bars; closing again is harmless


def distill(cfg: DistillConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Start a distillation into the new folder ``cfg.out``; returns the ``done`` fields."""
    cfg.validate()
    rep = reporter or Reporter()
    _single_process()
    check_teacher(cfg.teacher)
    info = open_dataset(cfg.data)
    out = Path(cfg.out)
    if (out / RECORD).is_file():
        raise OutputExistsError(
            f"{out} holds a distillation already; continue it with {resume_command(out)}, "
            "or choose a new folder"
        )
    if not (out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_NAME]):
        check_new_output_dir(out)  # a lone lock file is a dead run's leftover (or refused below)
    apply_torch_threads(cfg.threads)
    device = resolve_device(cfg.device)
    teacher = load_checkpoint(cfg.teacher, device=device)
    record = new_record(cfg, teacher, info)
    out.mkdir(exist_ok=True)
    with RunLock(out, action="distill"):
        others = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
        if others:
            raise OutputExistsError(
                f"output {out} was filled by another process while this run started; "
                "choose a new folder"
            )
        write_json_atomic(out / RECORD, record)
        student = TrainConfig.from_json(record["student"])
        job = _Distillation(out, record, info, device=device, reporter=rep)
        return job.run(teacher, student, started=False)


def resume_distill(
    out: str | Path, reporter: Reporter | None = None, **overrides: Any
) -> dict[str, Any]:
    """Continue the distillation in ``out``: the teacher targets left, then the student."""
    rep = reporter or Reporter()
    _single_process()
    folder = Path(out)
    record = read_record(folder)
    student = student_config(record, folder, overrides)
    info = open_dataset(record["data"])
    if info.fingerprint != record["data_fingerprint"]:
        raise InputError(
            f"the dataset {record['data']} changed since this distillation started (its "
            "fingerprint differs), so the cached teacher targets no longer match it; start a "
            "new distillation"
        )
    apply_torch_threads(student.threads)
    device = resolve_device(student.device)
    with RunLock(folder, action="resume"):
        teacher = load_checkpoint(record["teacher"]["path"], device=device)
        sha = str((teacher.meta.get("weights") or {}).get("sha256"))
        recorded = str(record["teacher"]["sha256"])
        if sha != recorded:
            raise InputError(
                f"the teacher {teacher.path} is not the one this distillation started with "
                f"(weights SHA-256 {sha[:16]}, recorded {recorded[:16]}); its targets would "
                "mix two teachers: start a new distillation"
            )
        started = (folder / STUDENT / "config.json").is_file()
        job = _Distillation(folder, record, info, device=device, reporter=rep)
        return job.run(teacher, student, started=started)


def _single_process() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(
            "ipv2 distill runs in one process; for several GPUs, let it compute the teacher "
            "targets, then continue the student with torchrun ... ipv2 train --resume --output "
            "RUN/student"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _Distillation:
    """One invocation: the teacher targets left, the student's training, the comparison."""

    def __init__(
        self,
        out: Path,
        record: dict[str, Any],
        info: DatasetInfo,
        *,
        device: torch.device,
        reporter: Reporter,
    ) -> None:
        self.out = out
        self.record = record
        self.info = info
        self.device = device
        self.reporter = reporter
        self.began = time.monotonic()

    def run(self, teacher: Loaded, student: TrainConfig, *, started: bool) -> dict[str, Any]:
        out, record, reporter = self.out, self.record, self.reporter
        t = record["teacher"]
        reporter.log(
            f"distilling teacher '{t['name']}' ({t['arch']}, {t['scheme']}, "
            f"{t['steps_note']}) into an FFM of base {student.model_params.get('base')} "
            f"sampled in {_count(int(student.scheme_params.get('steps', 1)), 'step')}, on "
            f"{record['input_kind']!r} inputs"
        )
        if int(t["steps"]) <= int(student.scheme_params.get("steps", 1)):
            reporter.log(
                f"the teacher samples in {_count(int(t['steps']), 'step')}, no more than the "
                "student: the student will not be faster",
                level="warning",
            )
        with StopRequest() as stop:
            targets = compute_targets(
                out,
                self.info,
                record,
                teacher=teacher,
                device=self.device,
                reporter=reporter,
                stop=stop,
            )
        reporter.log(
            f"teacher targets: {targets.cached} of {targets.slices} slices already computed, "
            f"{targets.computed} computed now"
        )
        if targets.stopped is not None:
            return self._stopped(targets.stopped, "teacher targets")
        del teacher  # the student trains without the teacher in memory
        result = train(student, _TrainerEvents(reporter), resume=started)
        if result.get("status") != "ok":
            return self._stopped(str(result.get("reason")), "student", trained=result)
        final = Path(str(result["checkpoint"]))
        with StopRequest() as stop:
            try:
                figures = compare(
                    load_checkpoint(t["path"], device=self.device),
                    load_checkpoint(final, device=self.device),
                    self.info,
                    record=record,
                    device=self.device,
                    reporter=reporter,
                    should_stop=lambda: stop.requested,
                )
            except ValidationStopped:
                annotate(final, record, None, manifest=self.info.manifest)
                return self._stopped(stop.reason, "comparison", trained=result)
        for name in ("final", "best"):
            if (out / STUDENT / name / META).is_file():
                figures_here = figures if name == "final" else None
                annotate(out / STUDENT / name, record, figures_here, manifest=self.info.manifest)
        for line in self._closing_lines(final, figures, epochs=student.epochs):
            reporter.log(line)
        done: dict[str, Any] = {
            "status": "ok",
            "student": str(final),
            "teacher": t["path"],
            "step": result.get("step"),
            "epoch": result.get("epoch"),
            "distill": figures,
            "resume_command": resume_command(out),
        }
        reporter.done(**done)
        return done

    def _closing_lines(
        self, final: Path, figures: dict[str, Any] | None, *, epochs: int
    ) -> list[str]:
        lines = [f"distilled in {duration(time.monotonic() - self.began)}: student model {final}"]
        if figures is None:
            lines.append("no validation split: teacher and student RMSE not measured")
        else:
            lines.append(
                f"validation RMSE on {_count(figures['slices'], 'slice')}: teacher "
                f"{figures['teacher_rmse_hu']:.1f} HU ({_count(figures['teacher_steps'], 'step')}), "
                f"student {figures['student_rmse_hu']:.1f} HU "
                f"({_count(figures['student_steps'], 'step')}); ratio {figures['ratio']}"
            )
            lines.append(
                f"time per slice on {figures['device']}: teacher "
                f"{figures['teacher_seconds_per_slice']:.3g} s, student "
                f"{figures['student_seconds_per_slice']:.3g} s ({figures['speedup']}x faster)"
            )
        lines.append(f"to train longer: {resume_command(self.out)} --epochs N (N > {epochs})")
        return lines

    def _stopped(
        self, reason: str, phase: str, *, trained: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        command = resume_command(self.out)
        self.reporter.log(
            f"stopped ({reason}) during the {phase} after "
            f"{duration(time.monotonic() - self.began)}; to continue: {command}"
        )
        fields: dict[str, Any] = {
            "status": "stopped",
            "reason": reason,
            "phase": phase,
            "resume": str(self.out),
            "resume_command": command,
        }
        if trained is not None:
            fields.update(step=trained.get("step"), epoch=trained.get("epoch"))
        self.reporter.done(**fields)
        return fields
