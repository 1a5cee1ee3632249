"""Evaluation runs: prediction set vs label set (FID, KID, CLIP-FID) and vs truth.

Distribution metrics need many slices, so they are computed once over all slices of the
set (the ``all`` row), as the paper does over its test set; a case of 16 slices cannot
support a 2048-dimensional Gaussian. Ground-truth metrics (PSNR, SSIM, residual noise)
are per case, and the ``all`` row holds their mean over cases. Feature extractors are
passed in by the caller, which makes the choice of network explicit: the CLI builds
Inception and CLIP from local weights, tests pass the deterministic stand-in. Without
named metrics, :func:`default_metrics` picks what runs offline with what was given;
sets too small for FID or KID get a warning (:func:`small_set_warnings`), since the
numbers look just as precise when they mean nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import HUWindow
from ipv2.core.volume import Volume
from ipv2.metrics.distances import (
    STANDARD_KID_SUBSET,
    STANDARD_KID_SUBSETS,
    KidResult,
    fid_from_features,
    kid,
)
from ipv2.metrics.features import FeatureExtractor, Features
from ipv2.metrics.imagesets import Case, ImageSet, check_same_layout, pair_cases
from ipv2.metrics.reference import (
    DEFAULT_ERODE_PX,
    REGION_KEYS,
    RegionMasks,
    reference_metrics,
)

DISTRIBUTION_METRICS = ("fid", "kid", "clipfid")
REFERENCE_METRICS = ("psnr", "ssim", "noise")
ALL_METRICS = DISTRIBUTION_METRICS + REFERENCE_METRICS
# Which extractor each distribution metric needs.
EXTRACTOR_FOR = {"fid": "inception", "kid": "inception", "clipfid": "clip"}
# Below this many slices a KID value is dominated by which slices happen to be there.
MIN_KID_SLICES = 50

Row = dict[str, object]


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,kid,psnr"`` -> ("fid", "kid", "psnr"); unknown names are refused."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise InputError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from "
            + ",".join(ALL_METRICS)
        )
    return names


def default_metrics(
    *, truth: bool, label: bool, inception: bool, clip: bool
) -> tuple[tuple[str, ...], list[str]]:
    """The metrics to compute when none are named, and a note for each one left out.

    A first run must work offline: the ground-truth metrics when a truth is given; FID
    and KID only with a label set and Inception features (weights given, or the
    stand-in asked for), CLIP-FID only with a label set and CLIP weights. Nothing
    computable is an :class:`InputError` that says what to give.
    """
    metrics: list[str] = list(REFERENCE_METRICS) if truth else []
    notes: list[str] = []
    if label:
        for names, have, how in (
            ("fid,kid", inception, "--inception-weights FILE (or IPV2_INCEPTION_WEIGHTS)"),
            ("clipfid", clip, "--clip-weights FILE (or IPV2_CLIP_WEIGHTS)"),
        ):
            if have:
                metrics += names.split(",")
            else:
                notes.append(f"{names} not computed: they need {how}")
    if not metrics:
        raise InputError(
            "nothing to compute: give --truth T for PSNR, SSIM and noise, or --label L with "
            "--inception-weights FILE for FID and KID (--clip-weights FILE for CLIP-FID), "
            "or name the metrics with --metrics"
        )
    return tuple(metrics), notes


def small_set_warnings(
    n_pred: int,
    n_label: int,
    *,
    fid_dim: int | None,
    kid_result: KidResult | None,
    fid_name: str = "FID",
) -> list[str]:
    """What makes FID or KID from these set sizes unreliable, in words; empty when fine.

    FID fits a D-dimensional Gaussian, so with no more slices than D its covariance is
    singular and the value mostly reflects the slice count. KID's subsets are drawn from
    the sets; when a subset holds a whole set, every draw repeats it and ``kid_std``
    (4e-16 on 2 slices) no longer measures any uncertainty.
    """
    n = min(n_pred, n_label)
    out: list[str] = []
    if fid_dim is not None and n <= fid_dim:
        out.append(
            f"{fid_name} from {n} slices of {fid_dim}-dimensional features: the covariance "
            f"is singular, so {fid_name} is biased by the slice count; compare values only "
            "at equal slice counts, and prefer KID for small sets"
        )
    if kid_result is not None:
        if n < MIN_KID_SLICES:
            out.append(
                f"KID from {n} slices (fewer than {MIN_KID_SLICES}) is dominated by which "
                "slices happen to be in the set; use more slices"
            )
        if kid_result.subset_size >= n:
            out.append(
                f"every KID subset holds all {kid_result.subset_size} slices of the smaller "
                f"set, so kid_std ({kid_result.std:.2g}) understates the uncertainty"
            )
    return out


@dataclass(frozen=True)
class EvaluationOptions:
    """What to compute and how."""

    metrics: tuple[str, ...]
    window: HUWindow
    kid_subsets: int = STANDARD_KID_SUBSETS
    kid_subset_size: int = STANDARD_KID_SUBSET
    erode_px: int = DEFAULT_ERODE_PX
    seed: int = 0
    unpaired: bool = False  # allow label sets that do not match case by case

    def distribution(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in DISTRIBUTION_METRICS)

    def reference(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in REFERENCE_METRICS)


@dataclass
class EvaluationResult:
    """Per-case rows, the ``all`` row, and everything needed to interpret them."""

    rows: list[Row]
    summary: Row
    conventions: dict[str, object]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. sets too small for FID/KID

    def to_json(self) -> dict[str, object]:
        return {
            "summary": clean_json(self.summary),
            "cases": [clean_json(r) for r in self.rows],
            "conventions": self.conventions,
            "notes": self.notes,
            "warnings": self.warnings,
        }


def clean_json(row: Row) -> Row:
    """Non-finite floats become None (JSON has no inf/NaN; PSNR of identical images is inf)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def _extract(
    extractor: FeatureExtractor,
    images: ImageSet,
    window: HUWindow,
    *,
    reporter: Reporter,
    what: str,
) -> Features:
    reporter.progress(f"{extractor.name} features ({what})", 0, 1)
    feats = extractor.features(images.all_slices(), window)
    reporter.progress(f"{extractor.name} features ({what})", 1, 1)
    return feats


def distribution_metrics(
    pred: ImageSet,
    label: ImageSet,
    options: EvaluationOptions,
    *,
    extractors: dict[str, FeatureExtractor],
    reporter: Reporter | None = None,
    warnings: list[str] | None = None,
) -> tuple[Row, dict[str, object]]:
    """FID / KID / CLIP-FID over all slices, and the conventions of the extractors used.

    Warnings about set sizes (:func:`small_set_warnings`) are appended to ``warnings``.
    """
    rep = reporter or Reporter()
    wanted = options.distribution()
    row: Row = {}
    conventions: dict[str, object] = {}
    for key in sorted({EXTRACTOR_FOR[m] for m in wanted}):
        if key not in extractors:
            raise InputError(f"metric(s) {', '.join(wanted)} need the {key} feature extractor")
        extractor = extractors[key]
        fp = _extract(extractor, pred, options.window, reporter=rep, what="predictions")
        fl = _extract(extractor, label, options.window, reporter=rep, what="labels")
        conventions[key] = {**extractor.conventions(), "window_hu": options.window.to_json()}
        fid_dim = kid_result = None
        if key == "clip" and "clipfid" in wanted:
            row["clipfid"] = fid_from_features(fp, fl)
            fid_dim = fp.shape[1]
        if key == "inception" and "fid" in wanted:
            row["fid"] = fid_from_features(fp, fl)
            fid_dim = fp.shape[1]
        if key == "inception" and "kid" in wanted:
            kid_result = kid(
                fp, fl, options.kid_subsets, subset_size=options.kid_subset_size, seed=options.seed
            )
            row.update(kid_result.to_json())
        if warnings is not None:
            warnings += small_set_warnings(
                len(fp),
                len(fl),
                fid_dim=fid_dim,
                kid_result=kid_result,
                fid_name="CLIP-FID" if key == "clip" else "FID",
            )
    return row, conventions


def _masks_for(case: Case, truth: np.ndarray, masks: dict[str, Volume] | None) -> RegionMasks:
    if masks is None:
        return RegionMasks.from_truth(truth)
    if len(masks) == 1:
        name, vol = next(iter(masks.items()))
    elif case.name in masks:
        name, vol = case.name, masks[case.name]
    else:
        raise InputError(f"no mask label map for case '{case.name}' (have: {', '.join(masks)})")
    if vol.shape != truth.shape:
        raise InputError(
            f"mask label map '{name}' has shape {vol.shape}, the truth of case '{case.name}' "
            f"{truth.shape} (z, y, x); give the masks of this case"
        )
    return RegionMasks.from_label_map(vol.array, f"label map '{name}'")


def reference_rows(
    pred: ImageSet,
    truth: ImageSet,
    options: EvaluationOptions,
    *,
    masks: dict[str, Volume] | None = None,
    reporter: Reporter | None = None,
) -> list[Row]:
    """Per-case PSNR / SSIM / residual noise against the truth."""
    rep = reporter or Reporter()
    pairs = pair_cases(pred, truth, "truth")
    rows: list[Row] = []
    for i, (p, t) in enumerate(pairs):
        rep.progress("ground-truth metrics", i, len(pairs))
        pa, ta = p.stack("prediction"), t.stack("truth")
        if pa.shape != ta.shape:
            raise InputError(
                f"case '{p.name}': prediction {pa.shape} and truth {ta.shape} (z, y, x) differ; "
                "ground-truth metrics need the prediction on the truth's grid"
            )
        regions = _masks_for(p, ta, masks)
        values = reference_metrics(
            pa,
            ta,
            regions,
            window=options.window,
            metrics=options.reference(),
            erode_px=options.erode_px,
        )
        rows.append({"case": p.name, "slices": p.depth, "masks": regions.source, **values})
    rep.progress("ground-truth metrics", len(pairs), len(pairs))
    return rows


def _mean_over_cases(rows: list[Row], key: str) -> float | None:
    values = [float(v) for r in rows if isinstance(v := r.get(key), (int, float)) and v is not None]
    return float(np.mean(values)) if values else None


def evaluate(
    pred: ImageSet,
    options: EvaluationOptions,
    label: ImageSet | None = None,
    *,
    truth: ImageSet | None = None,
    extractors: dict[str, FeatureExtractor] | None = None,
    masks: dict[str, Volume] | None = None,
    reporter: Reporter | None = None,
) -> EvaluationResult:
    """Everything ``options.metrics`` asks for; missing inputs are an :class:`InputError`."""
    notes: list[str] = []
    warnings: list[str] = []
    if options.distribution() and label is None:
        raise InputError(
            f"{', '.join(options.distribution())} compare with a label set: give --label"
        )
    if options.reference() and truth is None:
        raise InputError(
            f"{', '.join(options.reference())} need a ground truth (e.g. the phantom's clean "
            "volume): give --truth"
        )
    summary: Row = {"case": "all", "slices": pred.slice_count}
    conventions: dict[str, object] = {"window_hu": options.window.to_json()}
    if label is not None and options.distribution():
        if options.unpaired:
            notes.append("label set compared as a distribution (--unpaired), not case by case")
        else:
            check_same_layout(pred, label)
        summary["label_slices"] = label.slice_count
        values, used = distribution_metrics(
            pred, label, options, extractors=extractors or {}, reporter=reporter, warnings=warnings
        )
        summary.update(values)
        conventions.update(used)
        notes.append("FID, KID and CLIP-FID are computed once over all slices (the 'all' row)")
    rows: list[Row] = []
    if truth is not None and options.reference():
        rows = reference_rows(pred, truth, options, masks=masks, reporter=reporter)
        for key in ("psnr", "ssim", *REGION_KEYS):
            if key in rows[0]:
                summary[key] = _mean_over_cases(rows, key)
        conventions["reference"] = {
            "psnr_ssim": "inside the body (lungs included), images clipped to the window, "
            "data range = window width; SSIM: scikit-image, 7x7 uniform window, map averaged "
            "over the body; 'all' row = mean over cases",
            "noise": f"std of prediction - truth (HU, unclipped) inside background, body "
            f"(lungs excluded) and lungs, masks eroded {options.erode_px} px in-plane, scanner "
            "padding excluded",
            "bias_rmse": "mean and root mean square of prediction - truth (HU, unclipped) over "
            "each whole region (not eroded: edge errors count), scanner padding excluded",
        }
    return EvaluationResult(
        rows=rows, summary=summary, conventions=conventions, notes=notes, warnings=warnings
    )
