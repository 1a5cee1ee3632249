"""What a training panel needs before it launches anything: source checks and commands.

The IPv2Train panel shows, for a dataset folder or manifest, how many pairs fall in each
split and what is wrong with them, and turns its settings into the exact ``ipv2
build-dataset`` and ``ipv2 train`` command lines it will run (shown to the user, and
runnable by hand on a GPU server). No Qt, no Slicer.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ipv2.core.errors import InputError
from ipv2.data.format import DEFAULT_SPLIT_SEED, assign_splits
from ipv2.purification.modules import Module


@dataclass
class SourceSummary:
    """Pairs per split and problems found, for the panel's data section."""

    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    usable: bool = False

    def describe(self) -> str:
        if not self.usable:
            return "Not usable: " + "; ".join(self.warnings)
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        text = f"{sum(self.counts.values())} pairs ({parts})"
        return text + ("; warnings: " + "; ".join(self.warnings) if self.warnings else "")


def _header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Size and spacing from a volume's header only (no voxels read)."""
    if path.is_dir() or not path.exists():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(reader.GetSize()), tuple(round(s, 4) for s in reader.GetSpacing())


def inspect_source(source: str | os.PathLike[str], seed: int = DEFAULT_SPLIT_SEED) -> SourceSummary:
    """Counts per split (given, or the seeded 7 : 1.5 : 1.5 split) and pair problems."""
    # Imported here: the Slicer panel imports this module at startup, before it has
    # asked to install scipy and scikit-image, which the dataset builder needs.
    from ipv2.data.build import discover_pairs

    summary = SourceSummary()
    try:
        pairs = discover_pairs(source)
    except InputError as exc:
        summary.warnings.append(str(exc))
        return summary
    given = [p.split for p in pairs]
    if any(s is None for s in given):
        splits = assign_splits([p.case for p in pairs], [p.patient for p in pairs], seed)
    else:
        splits = [str(s) for s in given]
    counts = Counter(splits)
    summary.counts = {s: counts.get(s, 0) for s in ("train", "val", "test")}
    for pair in pairs:
        for path in (pair.uldct, pair.ndct):
            if not path.exists():
                summary.warnings.append(f"case {pair.case}: {path} is missing")
        u, n = _header(pair.uldct), _header(pair.ndct)
        if u is not None and n is not None and u != n:
            summary.warnings.append(
                f"case {pair.case}: uLDCT {u[0]} at {u[1]} mm vs NDCT {n[0]} at {n[1]} mm"
            )
    if summary.counts["train"] == 0:
        summary.warnings.append("no pairs in the training split")
    summary.usable = summary.counts["train"] > 0 and not any(
        "missing" in w for w in summary.warnings
    )
    return summary


@dataclass(frozen=True)
class TrainSettings:
    """The panel's training choices, as plain values."""

    data: str
    output: str
    model: str = "ffm"
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    crop: int = 0  # 0: whole slices
    device: str = "auto"
    gpus: int = 1
    base: int = 0  # 0: the network's default width
    steps: int = 0  # sampler steps; 0: the scheme's default
    weak_denoiser: bool = False
    max_steps: int = 0
    val_every: int = 1
    flips: bool = True

    def check(self) -> None:
        if not self.data:
            raise InputError("choose a dataset folder (built by Build dataset) to train on")
        if not self.output:
            raise InputError("choose an output folder for the training run")
        if self.gpus < 1:
            raise InputError("the number of GPUs must be at least 1")
        if self.gpus > 1 and self.device == "cpu":
            raise InputError("multi-GPU training needs --device cuda (or auto on a GPU machine)")


def train_command(s: TrainSettings, resume: bool = False) -> list[str]:
    """The ``ipv2 train`` arguments (without the Python or torchrun prefix)."""
    if resume:
        return ["train", "--resume", "--output", s.output, "--device", s.device]
    s.check()
    cmd = ["train", "--data", s.data, "--output", s.output, "--model", s.model]
    cmd += ["--epochs", str(s.epochs), "--batch-size", str(s.batch_size), "--lr", str(s.lr)]
    cmd += ["--device", s.device, "--val-every", str(s.val_every)]
    if s.crop:
        cmd += ["--crop", str(s.crop)]
    if s.base:
        cmd += [
            "--model-param",
            f"base={s.base}" if s.model not in ("redcnn", "regressor") else f"width={s.base}",
        ]
    if s.steps:
        cmd += ["--steps", str(s.steps)]
    if s.flips:
        cmd.append("--flips")
    if s.max_steps:
        cmd += ["--max-steps", str(s.max_steps)]
    if s.weak_denoiser:
        cmd += ["--weak-denoiser", "--scheme", "regression"]
    return cmd


def launcher(gpus: int) -> list[str]:
    """Module arguments that run the command under torchrun for several GPUs."""
    if gpus <= 1:
        return []
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]


@dataclass(frozen=True)
class DatasetPlan:
    """The panel's purification choices."""

    source: str
    out_dir: str
    strategy: str = "ipv2"
    modules: tuple[int, ...] = tuple(Module)
    t: float = 0.1
    mask_variant: str = "paper"
    dose: float = 0.02
    match_uldct: bool = True
    weak_model: str = "ffm"  # method.md: the same architecture and size as the main network
    weak_base: int = 0
    weak_epochs: int = 20
    weak_crop: int = 64
    device: str = "auto"


def build_command(
    plan: DatasetPlan,
    *,
    out_dir: str,
    modules: list[int],
    weak_denoiser: str | None = None,
) -> list[str]:
    """The ``ipv2 build-dataset`` arguments for the panel's strategy choices."""
    cmd = ["build-dataset", plan.source, "--out", out_dir, "--strategy", plan.strategy]
    cmd += ["--modules", ",".join(str(int(m)) for m in modules) or "none", "--T", str(plan.t)]
    cmd += ["--mask-variant", plan.mask_variant, "--dose", str(plan.dose)]
    if plan.match_uldct and Module.ADD_NOISE in modules:
        cmd.append("--match-uldct")
    if weak_denoiser and Module.REMOVE_NOISE in modules:
        cmd += ["--weak-denoiser", weak_denoiser]
    return cmd


def dataset_steps(plan: DatasetPlan) -> list[tuple[str, list[str]]]:
    """The commands that build ``plan.out_dir``, in order, each with a label.

    Module 3 needs a weak denoiser before labels can be made, so with Module 3 the build
    runs in three steps: the dataset without labels (it holds ``sim(N)``), the weak
    denoiser trained on it, then the full dataset with the weak denoiser applied.
    """
    if not plan.source:
        raise InputError("choose the source pairs (a PNG layout folder or a manifest)")
    if not plan.out_dir:
        raise InputError("choose a new folder for the dataset")
    mods = sorted(plan.modules)
    if Module.REMOVE_NOISE not in mods:
        return [("Building the dataset", build_command(plan, out_dir=plan.out_dir, modules=mods))]
    stage = f"{plan.out_dir}-stage1"
    weak = f"{plan.out_dir}-weak-denoiser"
    # Stage 1 holds sim(N) for the weak denoiser; Module 3 cannot run before it exists.
    stage_modules = {*mods, Module.ADD_NOISE} - {Module.REMOVE_NOISE}
    first = build_command(plan, out_dir=stage, modules=sorted(stage_modules))
    settings = TrainSettings(
        data=stage,
        output=weak,
        model=plan.weak_model,
        epochs=plan.weak_epochs,
        batch_size=2,
        lr=1e-3,
        crop=plan.weak_crop,
        base=plan.weak_base,
        device=plan.device,
        weak_denoiser=True,
        val_every=0,
    )
    final = build_command(plan, out_dir=plan.out_dir, modules=mods, weak_denoiser=f"{weak}/final")
    return [
        ("Building sim(N) for the weak denoiser", first),
        ("Training the weak denoiser (Module 3)", train_command(settings)),
        ("Building the dataset with IPv2 labels", final),
    ]
