"""Training pairs from a dataset folder (docs/dataset-format.md) or the authors' PNG layout.

Arrays are memory-mapped (``np.load(mmap_mode="r")``), so a step reads only the slices it
uses and nothing is decoded; the authors' 8-bit PNG layout (``<split>/lq``, ``<split>/gt``)
is decoded once and cached in memory. PNGs are listed and read only through
:mod:`ipv2.io.png_layout`, so training refuses exactly what that reader refuses (16-bit or
colour images, unpaired files, pairs of different sizes) instead of guessing.

Every random choice of a sample (crop position, flips) is a pure function of (seed, epoch,
sample index): a resumed run, or a run on any number of DDP ranks, draws exactly the same
augmentations without saving any RNG state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.data.format import read_manifest

if TYPE_CHECKING:
    from ipv2.io.png_layout import PngPair

FloatArray = npt.NDArray[np.float32]
_PNG_KINDS = {"uldct": "lq", "input": "lq", "ndct": "gt", "label": "gt"}


@dataclass
class DatasetInfo:
    """What a dataset folder declares: its window, strategy, modules and fingerprint."""

    root: Path
    layout: str  # "npy" or "png"
    window: HUWindow
    strategy: str | None
    modules: list[int]
    fingerprint: str
    manifest: dict[str, Any] = field(default_factory=dict)


def read_dataset_info(root: str | Path) -> DatasetInfo:
    """Identify the layout and read the manifest; refuse folders that are neither."""
    r = Path(root)
    if (r / "manifest.json").is_file():
        manifest = read_manifest(r)
        window = HUWindow.from_json(manifest.get("window_hu", DEFAULT_PNG_WINDOW.to_json()))
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        return DatasetInfo(
            r,
            "npy",
            window,
            strategy=manifest.get("strategy"),
            modules=[int(m) for m in manifest.get("modules", [])],
            fingerprint=digest,
            manifest=manifest,
        )
    if (r / "train" / "lq").is_dir() and (r / "train" / "gt").is_dir():
        names = [pair.lq.name for pair in _png_pairs(r, "train")]
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
        return DatasetInfo(
            r, "png", DEFAULT_PNG_WINDOW, strategy=None, modules=[], fingerprint=digest
        )
    raise InputError(
        f"{r} is not a training dataset: it has no manifest.json (build one with "
        "ipv2 build-dataset) and no authors' PNG layout (train/lq, train/gt)"
    )


def available_kinds(info: DatasetInfo, split: str) -> list[str]:
    folder = info.root / split
    if info.layout == "png":
        return [k for k, sub in _PNG_KINDS.items() if (folder / sub).is_dir()]
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.npy")))


def pick_kind(info: DatasetInfo, split: str, preferred: list[str]) -> str:
    """First of ``preferred`` the split has; names what exists otherwise."""
    kinds = available_kinds(info, split)
    for kind in preferred:
        if kind in kinds:
            return kind
    raise InputError(
        f"split {split!r} of {info.root} has none of the kinds {preferred} "
        f"(it has {kinds or 'nothing'}); rebuild the dataset with the needed modules"
    )


class SlicePairs:
    """Indexable (low, high) slice pairs of one split, in HU, plus optional neighbours."""

    def __init__(
        self, info: DatasetInfo, split: str, low_kind: str, high_kind: str, context: int = 0
    ) -> None:
        self.info = info
        self.split = split
        self.low_kind = low_kind
        self.high_kind = high_kind
        self.context = context
        self.low: list[FloatArray] = []
        self.high: list[FloatArray] = []
        self.names: list[str] = []
        if info.layout == "png":
            self._load_png()
        else:
            self._load_npy()
        self.index: list[tuple[int, int]] = [
            (c, z) for c, arr in enumerate(self.low) for z in range(arr.shape[0])
        ]
        if not self.index:
            raise InputError(f"split {split!r} of {info.root} holds no slices of kind {low_kind!r}")

    def _load_npy(self) -> None:
        low_dir = self.info.root / self.split / self.low_kind
        high_dir = self.info.root / self.split / self.high_kind
        for path in sorted(low_dir.glob("*.npy")):
            partner = high_dir / path.name
            if not partner.is_file():
                raise InputError(f"{path} has no partner {partner}; the dataset is incomplete")
            low = _mmap(path)
            high = _mmap(partner)
            if low.shape != high.shape:
                raise InputError(
                    f"{path} and {partner} differ in shape: {low.shape} vs {high.shape}"
                )
            self.low.append(low)
            self.high.append(high)
            self.names.append(path.stem)

    def _load_png(self) -> None:
        """Decode every pair once; ``read_png_pair`` refuses 16-bit, colour and unequal sizes."""
        from ipv2.io.png_layout import HIGH, LOW, read_png_pair

        folders = _PNG_KINDS[self.low_kind], _PNG_KINDS[self.high_kind]
        for pair in _png_pairs(self.info.root, self.split):
            u, n = read_png_pair(pair, self.info.window)
            by_folder = {LOW: u.array, HIGH: n.array}
            self.low.append(by_folder[folders[0]])
            self.high.append(by_folder[folders[1]])
            self.names.append(pair.name)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.low[0].shape[1:]
        return int(h), int(w)

    def slices(self, i: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(low (1, H, W), high (1, H, W), context stack (2k+1, H, W)) in HU."""
        case, z = self.index[i]
        low = self.low[case]
        if self.context:
            zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, low.shape[0] - 1)
            cond = np.asarray(low[zs], dtype=np.float32)
        else:
            cond = np.asarray(low[z : z + 1], dtype=np.float32)
        return (
            np.asarray(low[z : z + 1], dtype=np.float32),
            np.asarray(self.high[case][z : z + 1], dtype=np.float32),
            cond,
        )


def _png_pairs(root: Path, split: str) -> list[PngPair]:
    """The checked pairs of one split of the PNG layout, in file-name order.

    :func:`~ipv2.io.png_layout.list_png_pairs` orders by stem; training has always ordered
    by file name (``a-b.png`` before ``a.png``), and the order decides which slice each
    seeded sample index is, so it is kept to leave earlier runs and fingerprints unchanged.
    """
    from ipv2.io.png_layout import list_png_pairs  # SimpleITK only for PNG datasets

    return sorted(list_png_pairs(root, (split,)), key=lambda pair: pair.lq.name)


def _mmap(path: Path) -> FloatArray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path} is not a plain .npy array ({exc})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path} must hold a (z, y, x) volume, got shape {arr.shape}")
    return arr


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one sample: a pure function of its coordinates."""
    return np.random.default_rng([seed, epoch, index])


def augment(
    arrays: list[FloatArray], rng: np.random.Generator, crop: int | None, *, flips: bool
) -> list[FloatArray]:
    """Same random crop and flips for every array of one sample (C, H, W)."""
    h, w = arrays[0].shape[1:]
    if crop is not None:
        if crop > h or crop > w:
            raise InputError(
                f"crop {crop} is larger than the slices ({h} x {w}); choose a smaller --crop"
            )
        y = int(rng.integers(0, h - crop + 1))
        x = int(rng.integers(0, w - crop + 1))
        arrays = [a[:, y : y + crop, x : x + crop] for a in arrays]
    if flips:
        fy, fx = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        if fy:
            arrays = [a[:, ::-1, :] for a in arrays]
        if fx:
            arrays = [a[:, :, ::-1] for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


# A transform producing the network input from the target slice on the fly (the weak
# denoiser's sim(N)); it receives HU (1, H, W) and a seed sequence and returns HU.
LowTransform = Callable[[FloatArray, list[int]], FloatArray]


def make_batch(
    pairs: SlicePairs,
    indices: list[int],
    window: HUWindow,
    *,
    seed: int,
    epoch: int,
    crop: int | None,
    flips: bool,
    low_transform: LowTransform | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(low, high, cond) batches in [-1, 1], shape (B, C, h, w), augmented per sample."""
    lows, highs, conds = [], [], []
    for i in indices:
        low, high, cond = pairs.slices(i)
        if low_transform is not None:
            low = low_transform(high, [seed, epoch, i])
            cond = low
        low, high, cond = augment([low, high, cond], sample_rng(seed, epoch, i), crop, flips=flips)
        lows.append(low)
        highs.append(high)
        conds.append(cond)
    return (
        window.to_unit(np.stack(lows)),
        window.to_unit(np.stack(highs)),
        window.to_unit(np.stack(conds)),
    )
