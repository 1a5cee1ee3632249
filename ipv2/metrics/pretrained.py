"""Pretrained extractors: Inception-v3 (FID, KID) and a CLIP image encoder (CLIP-FID).

Both need large optional packages (the ``metrics`` extra) and weight files. Weights are
read from local files only, given by option or environment variable; nothing is
downloaded here, and a missing file is an :class:`InputError` that names the file and
where to get it, never a silent fall-back to a random network (whose FID would look
like a result and mean nothing). The packages are imported only when an extractor is
built, so the rest of ``ipv2`` works without them.

Conventions (stated in every report):

* Inception: HU window -> [0, 1] -> 0..255 uint8, gray repeated to 3 channels, native
  size; torch-fidelity resizes to 299 x 299 (TF1-compatible bilinear) and returns the
  2048-d pool features used by standard FID/KID.
* CLIP: HU window -> [0, 1], gray repeated to 3 channels, bicubic resize to 224 x 224,
  normalised with the OpenAI CLIP mean/std; the image embedding (512-d for ViT-B/32) is
  the feature, as in CLIP-FID (Kynkäänniemi et al. 2023).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow
from ipv2.metrics.features import Features, FloatArray, windowed_unit

INCEPTION_ENV = "IPV2_INCEPTION_WEIGHTS"
CLIP_ENV = "IPV2_CLIP_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)
CLIP_MODEL = "ViT-B-32"
CLIP_HINT = (
    "the OpenAI CLIP ViT-B/32 image-text checkpoint as open_clip loads it, e.g. "
    "open_clip_pytorch_model.bin from the Hugging Face repository "
    "timm/vit_base_patch32_clip_224.openai (or OpenAI's ViT-B-32.pt)"
)
PIP_NAMES = {"torch_fidelity": "torch-fidelity", "open_clip": "open_clip_torch"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_weights(
    given: str | os.PathLike[str] | None,
    env: str,
    option: str,
    *,
    what: str,
    hint: str,
    package: str,
) -> Path:
    """The weight file from the option, else the environment variable; absent -> InputError.

    The message names the file, where to get it, how to pass it, and also the missing
    package when there is one, so a user fixes everything in one go.
    """
    source = option if given else f"environment variable {env}"
    value = str(given) if given else os.environ.get(env, "")
    extra = ""
    if importlib.util.find_spec(package) is None:
        extra = (
            f" It also needs the package {PIP_NAMES.get(package, package)}, part of the "
            "optional extra: pip install 'ipv2[metrics]'."
        )
    if not value:
        raise InputError(
            f"{what} needs a local weight file and none was given. Needed: {hint}. Pass it with "
            f"{option} FILE or set {env}=/path/to/file (ipv2 never downloads weights).{extra}"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise InputError(
            f"{what} weight file {path} (from {source}) does not exist. Needed: {hint}.{extra}"
        )
    return path


def _missing_package(package: str, what: str) -> InputError:
    return InputError(
        f"{what} needs the Python package '{package}', which is not installed; install the "
        "optional extra with: pip install 'ipv2[metrics]'"
    )


def _gray_rgb(slices: Sequence[FloatArray], window: HUWindow) -> list[torch.Tensor]:
    """Windowed [0, 1] slices as (1, 3, H, W) float tensors (gray repeated)."""
    return [
        torch.from_numpy(windowed_unit(s, window))[None, None].expand(1, 3, -1, -1) for s in slices
    ]


def _run_batches(
    slices: Sequence[FloatArray],
    window: HUWindow,
    batch_size: int,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    net: Callable[[torch.Tensor], torch.Tensor],
) -> Features:
    out: list[np.ndarray[Any, Any]] = []
    images = _gray_rgb(slices, window)
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = torch.cat([prepare(t) for t in images[i : i + batch_size]], dim=0)
            out.append(net(batch).double().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0))


class InceptionExtractor:
    """torch-fidelity's Inception-v3 ("inception-v3-compat"), 2048-d pool features."""

    name = "inception-v3-compat"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        self.weights = resolve_weights(
            weights,
            INCEPTION_ENV,
            "--inception-weights",
            what="FID/KID (Inception-v3)",
            hint=f"{INCEPTION_FILE} (torch-fidelity's Inception-v3 port of the TF FID network, "
            f"from {INCEPTION_URL})",
            package="torch_fidelity",
        )
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise _missing_package("torch-fidelity", "FID/KID") from None
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._net = FeatureExtractorInceptionV3(
            self.name, ["2048"], feature_extractor_weights_path=str(self.weights)
        ).to(self.device)
        self._net.eval()

    def conventions(self) -> dict[str, object]:
        return {
            "extractor": "Inception-v3 (torch-fidelity inception-v3-compat), 2048-d pool3",
            "weights": str(self.weights),
            "input": (
                "HU window -> [0, 1] -> uint8 0..255, gray repeated to 3 channels, resized "
                "to 299x299 inside torch-fidelity (TF1-compatible bilinear)"
            ),
        }

    def features(self, slices: Sequence[FloatArray], window: HUWindow) -> Features:
        def prepare(t: torch.Tensor) -> torch.Tensor:
            return torch.round(t * 255.0).to(torch.uint8).to(self.device)

        def net(batch: torch.Tensor) -> torch.Tensor:
            return self._net(batch)[0].reshape(batch.shape[0], -1)

        return _run_batches(slices, window, self.batch_size, prepare=prepare, net=net)


class ClipExtractor:
    """A CLIP image encoder (open_clip, ViT-B/32 by default) for CLIP-FID."""

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        model: str = CLIP_MODEL,
    ):
        self.weights = resolve_weights(
            weights,
            CLIP_ENV,
            "--clip-weights",
            what="CLIP-FID (CLIP image encoder)",
            hint=CLIP_HINT,
            package="open_clip",
        )
        try:
            import open_clip
        except ImportError:
            raise _missing_package("open_clip_torch", "CLIP-FID") from None
        self.name = f"clip-{model}"
        self.model_name = model
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            net = open_clip.create_model(model, pretrained=str(self.weights))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(
                f"cannot load CLIP {model} weights from {self.weights}: {exc}. Needed: {CLIP_HINT}"
            ) from exc
        self._net = net.to(self.device).eval()
        self._mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def conventions(self) -> dict[str, object]:
        return {
            "extractor": f"CLIP {self.model_name} image encoder (open_clip), image embedding",
            "weights": str(self.weights),
            "input": (
                "HU window -> [0, 1], gray repeated to 3 channels, bicubic resize to 224x224 "
                "(antialiased), OpenAI CLIP mean/std normalisation"
            ),
        }

    def features(self, slices: Sequence[FloatArray], window: HUWindow) -> Features:
        def prepare(t: torch.Tensor) -> torch.Tensor:
            t = F.interpolate(
                t, size=(224, 224), mode="bicubic", antialias=True, align_corners=False
            )
            return ((t.clamp(0.0, 1.0) - self._mean) / self._std).to(self.device)

        def net(batch: torch.Tensor) -> torch.Tensor:
            return self._net.encode_image(batch).float()

        return _run_batches(slices, window, self.batch_size, prepare=prepare, net=net)
