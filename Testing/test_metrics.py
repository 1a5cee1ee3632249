"""Metrics: FID/KID distances, the stand-in extractor, weight errors, ground-truth metrics."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ipv2.core.errors import InputError
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.metrics import (
    FeatureExtractor,
    PixelStatsExtractor,
    RegionMasks,
    fid_from_features,
    frechet_distance,
    kid,
    reference_metrics,
    residual_noise_std,
    windowed_unit,
)
from ipv2.metrics.distances import kid_subset_size, mmd2_unbiased, polynomial_kernel
from ipv2.metrics.pretrained import (
    CLIP_ENV,
    INCEPTION_ENV,
    INCEPTION_FILE,
    ClipExtractor,
    InceptionExtractor,
)
from ipv2.phantom import PhantomCase, make_phantom

W = DEFAULT_PNG_WINDOW


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return make_phantom(64, 16, seed=0)


@pytest.fixture(scope="module")
def truth_masks(case: PhantomCase) -> RegionMasks:
    m = case.masks_ld
    return RegionMasks(m.body, m.lung, m.background, source="phantom")


def _features(slices: np.ndarray) -> np.ndarray:
    return PixelStatsExtractor(seed=0).features(list(slices), W)


# --- distances -------------------------------------------------------------------------


def test_fid_is_zero_for_identical_sets(case: PhantomCase) -> None:
    f = _features(case.clean_ld.array)
    assert f.shape == (16, PixelStatsExtractor().dim)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
    # Also with more images than dimensions (a well-conditioned covariance).
    g = np.random.default_rng(1).normal(size=(200, 8))
    assert fid_from_features(g, g.copy()) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_closed_form_for_shifted_scaled_gaussians() -> None:
    d = 5
    mu1, mu2 = np.zeros(d), np.full(d, 2.0)
    s1, s2 = np.eye(d), 4.0 * np.eye(d)
    # |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) = 4d + d(1 + 4 - 4)
    assert frechet_distance(mu1, s1, mu2, sigma2=s2) == pytest.approx(5.0 * d, rel=1e-9)


def test_fid_positive_and_growing_with_added_noise(case: PhantomCase) -> None:
    clean = case.clean_ld.array
    reference = _features(clean)
    rng = np.random.default_rng(0)
    values = []
    for sigma in (5.0, 20.0, 50.0, 120.0):
        noisy = clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32)
        values.append(fid_from_features(_features(noisy), reference))
    assert values[0] > 0.0
    assert all(b > a for a, b in itertools.pairwise(values)), values


def test_kid_is_unbiased_over_random_splits_of_one_pool() -> None:
    """Splitting one pool at random: the unbiased MMD^2 averages to 0, the biased one not."""
    pool = np.concatenate([_features(make_phantom(64, 16, seed=s).uldct.array) for s in (3, 4, 5)])
    rng = np.random.default_rng(0)
    unbiased, biased = [], []
    for _ in range(400):
        p = rng.permutation(len(pool))
        a, b = pool[p[:24]], pool[p[24:]]
        unbiased.append(mmd2_unbiased(a, b))
        kab = polynomial_kernel(a, b).mean()
        biased.append(polynomial_kernel(a, a).mean() + polynomial_kernel(b, b).mean() - 2 * kab)
    u, bi = np.asarray(unbiased), np.asarray(biased)
    standard_error = u.std() / np.sqrt(len(u))
    assert abs(u.mean()) < 3.0 * standard_error
    assert bi.mean() > 10.0 * standard_error  # the diagonal terms bias it upwards


def test_kid_of_shuffled_copy_is_near_zero_and_far_below_a_real_difference(
    case: PhantomCase,
) -> None:
    noisy = _features(case.uldct.array)
    clean = _features(case.clean_ld.array)
    shuffled = noisy[np.random.default_rng(2).permutation(len(noisy))]
    same = kid(noisy, shuffled, subsets=50, seed=1)
    different = kid(noisy, clean, subsets=50, seed=1)
    assert different.mean > 0.0
    assert abs(same.mean) < 0.1 * different.mean


def test_kid_subset_size_shrinks_for_small_sets(case: PhantomCase) -> None:
    f = _features(case.uldct.array)
    result = kid(f[:12], f, subsets=5)
    assert result.subset_size == 12 and result.shrunk
    assert result.to_json()["kid_subset_size"] == 12
    assert kid_subset_size(5000, 3000) == 1000
    assert kid_subset_size(5000, 300) == 300
    with pytest.raises(InputError, match="too few"):
        kid(f[:1], f)


def test_distances_refuse_mismatched_dimensions() -> None:
    a = np.zeros((4, 3))
    with pytest.raises(InputError, match="dimensions differ"):
        kid(a, np.zeros((4, 5)))
    with pytest.raises(InputError, match="same extractor"):
        fid_from_features(np.random.default_rng(0).normal(size=(6, 3)), np.ones((6, 5)))


# --- extractors ------------------------------------------------------------------------


def test_pixelstats_extractor_is_deterministic_and_seeded(case: PhantomCase) -> None:
    slices = list(case.uldct.array[:4])
    extractor = PixelStatsExtractor(seed=7)
    assert isinstance(extractor, FeatureExtractor)
    first = extractor.features(slices, W)
    np.testing.assert_array_equal(first, PixelStatsExtractor(seed=7).features(slices, W))
    assert not np.allclose(first, PixelStatsExtractor(seed=8).features(slices, W))
    assert "stand-in" in str(extractor.conventions()["extractor"])
    # Slices of different sizes are fine: the projection works on a fixed grid.
    mixed = extractor.features([slices[0], slices[1][:40, :50]], W)
    assert mixed.shape == (2, extractor.dim) and np.isfinite(mixed).all()


def test_windowed_unit_clips_to_the_window() -> None:
    u = windowed_unit(np.array([[-2000.0, 0.0, 5000.0]]), HUWindow(-1000.0, 1000.0))
    np.testing.assert_allclose(u, [[0.0, 0.5, 1.0]])
    with pytest.raises(InputError, match="NaN"):
        windowed_unit(np.array([[np.nan, 0.0]]), W)


def test_pretrained_extractors_need_local_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.delenv(CLIP_ENV, raising=False)
    with pytest.raises(InputError) as err:
        InceptionExtractor()
    message = str(err.value)
    assert INCEPTION_FILE in message and INCEPTION_ENV in message
    assert "--inception-weights" in message and "github.com/toshas/torch-fidelity" in message
    missing = tmp_path / "absent.pth"
    monkeypatch.setenv(INCEPTION_ENV, str(missing))
    with pytest.raises(InputError, match=r"absent\.pth.*does not exist"):
        InceptionExtractor()
    with pytest.raises(InputError, match=f"{CLIP_ENV}.*ViT-B/32|ViT-B/32.*{CLIP_ENV}"):
        ClipExtractor()


# --- ground-truth metrics --------------------------------------------------------------


def test_noise_of_the_truth_against_itself_is_zero(
    case: PhantomCase, truth_masks: RegionMasks
) -> None:
    row = reference_metrics(case.clean_ld.array, case.clean_ld.array, truth_masks, window=W)
    assert row["noise_background_hu"] == 0.0 and row["noise_lung_hu"] == 0.0
    assert row["psnr"] == float("inf") and row["ssim"] == pytest.approx(1.0)
    assert int(row["noise_background_pixels"] or 0) > 1000
    assert int(row["noise_lung_pixels"] or 0) > 1000


def test_uldct_has_more_noise_and_lower_psnr_ssim_than_a_light_denoise(
    case: PhantomCase, truth_masks: RegionMasks
) -> None:
    truth = case.clean_ld.array
    noisy = reference_metrics(case.uldct.array, truth, truth_masks, window=W)
    gentle = truth + 0.2 * (case.uldct.array - truth)  # 80% of the noise removed
    better = reference_metrics(gentle, truth, truth_masks, window=W)
    assert float(noisy["noise_background_hu"] or 0) > 20.0
    assert float(noisy["noise_lung_hu"] or 0) > 20.0
    for key in ("noise_background_hu", "noise_lung_hu"):
        assert float(better[key] or 0) == pytest.approx(0.2 * float(noisy[key] or 0), rel=1e-3)
    assert float(better["psnr"] or 0) > float(noisy["psnr"] or 0)
    assert float(better["ssim"] or 0) > float(noisy["ssim"] or 0)


def test_residual_noise_measures_known_noise_and_ignores_an_offset(case: PhantomCase) -> None:
    truth = case.clean_ld.array
    mask = case.masks_ld.lung
    noise = np.random.default_rng(0).normal(0.0, 30.0, truth.shape).astype(np.float32)
    assert residual_noise_std(truth + noise, truth, mask) == pytest.approx(30.0, rel=0.05)
    assert residual_noise_std(truth + 50.0, truth, mask) == pytest.approx(0.0, abs=1e-3)
    assert residual_noise_std(truth, truth, np.zeros_like(mask)) is None


def test_masks_from_label_map_and_from_truth(case: PhantomCase) -> None:
    labels = case.masks_ld.label_map()
    regions = RegionMasks.from_label_map(labels)
    np.testing.assert_array_equal(regions.lung, case.masks_ld.lung)
    np.testing.assert_array_equal(regions.body, case.masks_ld.body | case.masks_ld.lung)
    assert regions.eroded(2).lung.sum() < regions.lung.sum()
    with pytest.raises(InputError, match="label map"):
        RegionMasks.from_label_map(labels.astype(np.int16) * 100)
    computed = RegionMasks.from_truth(case.clean_ld.array)
    overlap = (computed.lung & case.masks_ld.lung).sum() / case.masks_ld.lung.sum()
    assert overlap > 0.8


def test_scanner_padding_is_left_out_of_the_background() -> None:
    padded = make_phantom(64, 4, seed=1, padding_value=-3024.0)
    m = padded.masks_ld
    masks = RegionMasks(m.body, m.lung, m.background, source="phantom")
    row = reference_metrics(
        padded.uldct.array, padded.clean_ld.array, masks, window=W, metrics=("noise",)
    )
    plain = make_phantom(64, 4, seed=1)
    m2 = plain.masks_ld
    row2 = reference_metrics(
        plain.uldct.array,
        plain.clean_ld.array,
        RegionMasks(m2.body, m2.lung, m2.background, source="p"),
        window=W,
        metrics=("noise",),
    )
    assert int(row["noise_background_pixels"] or 0) < int(row2["noise_background_pixels"] or 0)
    # The padding itself has zero residual; including it would pull the figure down.
    assert float(row["noise_background_hu"] or 0) > 20.0


def test_ground_truth_metrics_refuse_mismatched_shapes(
    case: PhantomCase, truth_masks: RegionMasks
) -> None:
    with pytest.raises(InputError, match="differ in shape"):
        reference_metrics(case.uldct.array[:4], case.clean_ld.array, truth_masks, window=W)


def test_library_evaluation_on_arrays_as_the_demo_calls_it(case: PhantomCase) -> None:
    from ipv2.metrics import EvaluationOptions, evaluate, image_set_from_arrays

    truth = image_set_from_arrays({"case0": case.clean_ld})
    options = EvaluationOptions(metrics=("fid", "kid", "noise"), window=W, kid_subsets=5)
    rows = {}
    for name, pred in (("uldct", case.uldct.array), ("truth", case.clean_ld.array)):
        result = evaluate(
            image_set_from_arrays({"case0": pred}),
            options,
            label=truth,
            truth=truth,
            extractors={"inception": PixelStatsExtractor()},
            masks=None,
        )
        rows[name] = result.summary
    assert rows["truth"]["fid"] == pytest.approx(0.0, abs=1e-9)
    assert float(rows["uldct"]["fid"]) > 0.0  # type: ignore[arg-type]
    assert rows["truth"]["noise_lung_hu"] == 0.0
    assert float(rows["uldct"]["noise_background_hu"]) > 20.0  # type: ignore[arg-type]
    phantom = RegionMasks.from_regions(case.masks_ld)
    assert phantom.lung.sum() == case.masks_ld.lung.sum() and phantom.source == "phantom"
