"""The demo's stages, in order, each reusing the engine's public functions.

1. Phantom patients (uLDCT at one breathing phase, NDCT at another, truth for both).
2. Module 2's simulation fitted to each case's uLDCT; the weak denoiser (Module 3) is
   trained on ``(sim(N), N)``.
3. Two datasets from the same pairs: IPv1, and IPv2 (Modules 1+2 for training inputs,
   1+3 for labels).
4. The same small FFM trained on each with the same seed and step budget.
5. With ``distill``: a one-step student of the IPv2-trained model (:mod:`ipv2.demo.student`).
6. The models denoise the test patient's real uLDCT; the outputs are measured against
   the noise-free truth (and the labels), and the report is written.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import HUWindow
from ipv2.core.volume import Volume
from ipv2.data.build import BuildConfig, build_dataset
from ipv2.data.training_pairs import read_dataset_info
from ipv2.demo.checks import fidelity_checks
from ipv2.demo.config import STRATEGIES, STUDENT, STUDENT_STEPS, DemoConfig, model_title
from ipv2.demo.student import distill_student, student_checks
from ipv2.inference.denoise import DenoiseOptions, denoise_volume
from ipv2.io.atomic import atomic_output_dir, write_json_atomic
from ipv2.io.checkpoints import load_checkpoint
from ipv2.io.relocate import replace_in_text_files, repoint_paths
from ipv2.metrics import RegionMasks, reference_metrics
from ipv2.phantom import PhantomCase, make_phantom
from ipv2.phantom.export import write_case
from ipv2.purification.modules import ALL_MODULES, Module
from ipv2.purification.recipe import Recipe
from ipv2.training import TrainConfig, latest_checkpoint, train


@dataclass
class StageClock:
    """Wall time of each stage, for the report."""

    seconds: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t0, 1)
        self._t0 = now


def write_phantoms(config: DemoConfig, root: Path, reporter: Reporter) -> list[PhantomCase]:
    """The demo's phantom patients and their ``pairs.csv`` in ``root`` (created here).

    The last case is the test patient, the one before it validates; the ablation
    (``ipv2.benchmarks.ablation``) uses the same patients.
    """
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    rows = []
    for i in range(config.cases):
        reporter.progress("demo: phantom patients", i, config.cases)
        case = make_phantom(size=config.size, slices=config.slices, seed=config.seed + i)
        name = f"case{i:03d}"
        write_case(case, root / name)
        split = "test" if i == config.cases - 1 else "val" if i == config.cases - 2 else "train"
        rows.append(
            {
                "case": name,
                "patient": name,
                "split": split,
                "uldct": f"{name}/uldct.nrrd",
                "ndct": f"{name}/ndct.nrrd",
            }
        )
        cases.append(case)
    reporter.progress("demo: phantom patients", config.cases, config.cases)
    with (root / "pairs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return cases


def train_demo_ffm(
    config: DemoConfig,
    data: Path,
    out: Path,
    *,
    reporter: Reporter,
    steps: int | None = None,
    weak_denoiser: bool = False,
    train_kinds: tuple[str, str] | None = None,
) -> Path:
    """The demo's FFM (or weak denoiser) on ``data`` with the demo's budget; its checkpoint."""
    steps = config.steps if steps is None else steps
    cfg = TrainConfig(
        data=str(data),
        output=str(out),
        model="ffm",
        model_params={"base": config.base, "mults": list(config.mults)},
        epochs=10_000,
        max_steps=steps,
        batch_size=config.batch_size,
        lr=config.lr,
        crop=config.crop,
        flips=True,
        val_every=0,
        checkpoint_every=10_000,
        seed=config.seed,
        device=config.device,
        threads=config.threads,
        weak_denoiser=weak_denoiser,
        log_every=max(1, steps // 20),
        train_kinds=list(train_kinds) if train_kinds else [],
    )
    result = train(cfg, reporter)
    found = result.get("checkpoint") or latest_checkpoint(out)
    if found is None:
        raise InputError(f"training in {out} produced no checkpoint")
    return Path(found)


def run_demo(
    config: DemoConfig, out_dir: str | Path, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Run every stage into ``out_dir`` (a new folder); returns the metrics written."""
    from ipv2.demo.report import write_report

    config.check()
    rep = reporter or Reporter()
    clock = StageClock()
    window = HUWindow(*config.window)
    with atomic_output_dir(out_dir) as root:
        temporary = (root.resolve(), root)  # the names written inside, repointed below
        data = root / "phantom"
        data.mkdir()
        cases = write_phantoms(config, data, rep)
        clock.lap("phantom")
        ipv2_recipe = Recipe.for_strategy("ipv2", ALL_MODULES)
        rep.log(
            "building the IPv2 training set (Module 2 fitted to each uLDCT) for the weak denoiser"
        )
        # Module 3 needs the weak denoiser this stage trains: modules 1,2 only here.
        stage1_recipe = Recipe.for_strategy("ipv2", ALL_MODULES - {Module.REMOVE_NOISE})
        stage1 = BuildConfig(recipe=stage1_recipe, match_uldct=True, window=window)
        build_dataset(data / "pairs.csv", root / "dataset-ipv2-sim", stage1, reporter=rep)
        clock.lap("simulation")
        rep.log("training the weak denoiser (Module 3) on (sim(N), N)")
        weak = train_demo_ffm(
            config,
            root / "dataset-ipv2-sim",
            root / "weak-denoiser",
            reporter=rep,
            steps=config.weak_steps,
            weak_denoiser=True,
        )
        clock.lap("weak denoiser")
        datasets = {
            "ipv1": build_dataset(
                data / "pairs.csv",
                root / "dataset-ipv1",
                BuildConfig(recipe=Recipe.for_strategy("ipv1"), window=window),
                reporter=rep,
            ),
            "ipv2": build_dataset(
                data / "pairs.csv",
                root / "dataset-ipv2",
                BuildConfig(
                    recipe=ipv2_recipe, match_uldct=True, window=window, weak_checkpoint=weak
                ),
                reporter=rep,
            ),
        }
        clock.lap("datasets")
        models = {}
        for name in STRATEGIES:
            rep.log(
                f"training FFM on the {name.replace('ipv', 'IPv')} dataset ({config.steps} steps)"
            )
            models[name] = train_demo_ffm(
                config,
                root / f"dataset-{name}",
                root / f"model-{name}",
                reporter=rep,
                steps=config.steps,
                weak_denoiser=False,
            )
            clock.lap(f"train {name}")
        steps = {name: config.sampler_steps for name in STRATEGIES}
        distilled: dict[str, Any] | None = None
        if config.distill:
            rep.log(f"distilling the IPv2-trained model into a {STUDENT_STEPS}-step student")
            models[STUDENT], distilled = distill_student(
                config,
                models["ipv2"],
                root / "dataset-ipv2",
                manifest=datasets["ipv2"],
                out=root / "student-ipv2",
                reporter=rep,
            )
            steps[STUDENT] = STUDENT_STEPS
            clock.lap("distill")
        test = cases[-1]
        outputs: dict[str, Volume] = {}
        for name in models:
            loaded = load_checkpoint(models[name])
            options = DenoiseOptions(steps=steps[name], device=config.device)
            rep.log(f"denoising the test patient with the {model_title(name)}")
            stage = f"demo: denoise ({name})"

            def progress(done: int, total: int, stage: str = stage) -> None:
                rep.progress(stage, done, total)

            outputs[name], _ = denoise_volume(test.uldct, loaded, options, progress=progress)
        clock.lap("denoise")
        labels = _test_labels(root, datasets)
        metrics = _measure(test, outputs, labels, window=window)
        if distilled is not None:
            metrics["distill_validation"] = distilled
        metrics["config"] = asdict(config)
        metrics["stage_seconds"] = clock.seconds
        metrics["total_seconds"] = round(sum(clock.seconds.values()), 1)
        write_json_atomic(root / "metrics.json", metrics)
        write_report(root, test, outputs, labels=labels, metrics=metrics)
    _repoint(Path(out_dir), temporary)
    rep.done(status="ok", out=str(out_dir), **metrics["comparison"])
    return metrics


def _repoint(final: Path, temporary: tuple[Path, Path]) -> None:
    """Point the paths inside the published demo at it (configs, manifests, logs).

    A dataset's fingerprint is the hash of its manifest, which names its source files,
    so repointing changes it: the fingerprints recorded by the models and the student
    trained on it are carried along, or a resumed distillation would refuse its cache.
    """
    manifests = sorted(final.glob("dataset-*/manifest.json"))
    before = [read_dataset_info(m.parent).fingerprint for m in manifests]
    for old, new in zip(temporary, (final.resolve(), final), strict=True):
        repoint_paths(final, old, new)
    after = [read_dataset_info(m.parent).fingerprint for m in manifests]
    replace_in_text_files(final, [(a, b) for a, b in zip(before, after, strict=True) if a != b])


def _test_labels(root: Path, manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    labels = {}
    for name, manifest in manifests.items():
        test = next(c for c in manifest["cases"] if c["split"] == "test")
        path = root / f"dataset-{name}" / "test" / "label" / f"{test['case']}.npy"
        if path.exists():
            labels[name] = np.load(path)
    return labels


def measure_regions(test: PhantomCase, output: Any, window: HUWindow) -> dict[str, Any]:
    """PSNR/SSIM and bias, RMSE and noise per truth region of ``output`` for the test case."""
    regions = RegionMasks.from_regions(test.masks_ld)
    return dict(reference_metrics(output, test.clean_ld.array, regions, window=window))


def _measure(
    test: PhantomCase, outputs: dict[str, Volume], labels: dict[str, Any], *, window: HUWindow
) -> dict[str, Any]:
    regions = RegionMasks.from_regions(test.masks_ld)
    rows: dict[str, Any] = {"uldct (input)": measure_regions(test, test.uldct.array, window)}
    for name, out in outputs.items():
        row: dict[str, Any] = measure_regions(test, out.array, window)
        for label_name, label in labels.items():
            vs = reference_metrics(
                out.array, label, regions, window=window, metrics=("psnr", "ssim")
            )
            row[f"psnr_vs_{label_name}_label"] = vs["psnr"]
            row[f"ssim_vs_{label_name}_label"] = vs["ssim"]
        rows[model_title(name)] = row
    a, b = rows[model_title("ipv1")], rows[model_title("ipv2")]

    def reduction(key: str) -> float | None:
        if a.get(key) in (None, 0) or b.get(key) is None:
            return None
        return round(1.0 - float(b[key]) / float(a[key]), 4)

    checks = fidelity_checks(rows["uldct (input)"], a, b)
    comparison: dict[str, Any] = {
        "background_noise_reduction_ipv2_vs_ipv1": reduction("noise_background_hu"),
        "lung_noise_reduction_ipv2_vs_ipv1": reduction("noise_lung_hu"),
        "fidelity_checks": [c.to_json() for c in checks],
        "fidelity_passed": all(c.passed for c in checks),
    }
    if STUDENT in outputs:
        distilled = student_checks(b, rows[model_title(STUDENT)])
        comparison["student_checks"] = [c.to_json() for c in distilled]
        comparison["student_passed"] = all(c.passed for c in distilled)
    return {
        "truth": "noise-free low-dose-phase anatomy (clean_ld) of the test patient",
        "rows": rows,
        "comparison": comparison,
    }
