"""Evaluation metrics: feature distances (FID, KID, CLIP-FID) and ground-truth metrics.

The paper measures denoised real scans against their purified labels with FID, KID and
CLIP-FID, because pixel metrics mislead when the two scans are not aligned
(``distances``, ``features``, ``pretrained``). Where a truth exists, as in the phantom,
PSNR, SSIM and the residual noise inside background and lungs say directly what a
strategy removed (``reference``). ``evaluate`` ties both to sets of volumes, DICOM
series or PNG folders and produces one row per case.
"""

from ipv2.metrics.distances import KidResult, fid_from_features, frechet_distance, kid
from ipv2.metrics.evaluate import EvaluationOptions, EvaluationResult, evaluate, parse_metrics
from ipv2.metrics.features import FeatureExtractor, PixelStatsExtractor, windowed_unit
from ipv2.metrics.imagesets import ImageSet, image_set_from_arrays, load_image_set
from ipv2.metrics.reference import (
    RegionMasks,
    psnr_in_mask,
    reference_metrics,
    residual_noise_std,
    ssim_in_mask,
)

__all__ = [
    "EvaluationOptions",
    "EvaluationResult",
    "FeatureExtractor",
    "ImageSet",
    "KidResult",
    "PixelStatsExtractor",
    "RegionMasks",
    "evaluate",
    "fid_from_features",
    "frechet_distance",
    "image_set_from_arrays",
    "kid",
    "load_image_set",
    "parse_metrics",
    "psnr_in_mask",
    "reference_metrics",
    "residual_noise_std",
    "ssim_in_mask",
    "windowed_unit",
]
