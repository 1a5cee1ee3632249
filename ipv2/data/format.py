"""The purified dataset on disk (docs/dataset-format.md): splitting and reading back.

A dataset is ``<root>/manifest.json`` plus ``<root>/<split>/<kind>/<case>.npy`` float32
arrays (z, y, x) in HU. Readers memory-map the arrays, so a trainer touches only the
slices it samples. The split is by pair, 7 : 1.5 : 1.5 with a fixed seed (the authors'
3017/646/647 of 4310), keeping every case of one patient in one split when patient ids
are known, so no patient's anatomy leaks from training into testing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.json_files import read_json

FORMAT = "ipv2-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
KINDS: tuple[str, ...] = ("uldct", "ndct", "input", "label", "sim", "lung")
DEFAULT_RATIOS: tuple[float, float, float] = (0.7, 0.15, 0.15)
DEFAULT_SPLIT_SEED = 2024


def split_sizes(n: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> tuple[int, int, int]:
    """Cases per split: train and val rounded down, test takes the rest (4310 -> 3017/646/647).

    Small sets keep every split that can exist: at least one training case, and one
    validation case as soon as two cases remain after training (4 -> 2/1/1, not 2/0/2).
    """
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise InputError(f"split ratios must be three non-negative numbers, got {list(ratios)}")
    total = float(sum(ratios))
    train = math.floor(n * ratios[0] / total + 1e-9)
    val = math.floor(n * ratios[1] / total + 1e-9)
    if train == 0 and n >= 1 and ratios[0] > 0:
        train = 1
    if val == 0 and ratios[1] > 0 and n - train >= 2:
        val = 1
    return train, val, n - train - val


def assign_splits(
    case_ids: Sequence[str],
    patient_ids: Sequence[str | None] | None = None,
    seed: int = DEFAULT_SPLIT_SEED,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
) -> list[str]:
    """The split of each case, deterministic for a given seed.

    Cases are grouped by patient (a case without a patient id is its own group), groups
    are shuffled with ``seed`` and filled into train, then val, then test until each
    reaches its share; without patient ids this is exactly a seeded split by pair.
    """
    n = len(case_ids)
    if patient_ids is not None and len(patient_ids) != n:
        raise InputError("one patient id (or none) is needed per case")
    groups: dict[str, list[int]] = {}
    for i in range(n):
        pid = patient_ids[i] if patient_ids is not None else None
        key = f"patient:{pid}" if pid else f"case:{case_ids[i]}:{i}"
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    targets = split_sizes(n, ratios)
    filled = [0, 0, 0]
    out = [""] * n
    for g in order:
        members = groups[keys[int(g)]]
        s = next((i for i in range(2) if filled[i] < targets[i]), 2)
        filled[s] += len(members)
        for i in members:
            out[i] = SPLITS[s]
    return out


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a built dataset, checked for format and version."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise InputError(
            f"{root} is not a purified dataset: {path} is missing (run ipv2 build-dataset)"
        )
    data = read_json(path, what=f"an {FORMAT} manifest (written by ipv2 build-dataset)")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not an {FORMAT} manifest")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"{path} has format version {data.get('format_version')}; this engine reads up to "
            f"{FORMAT_VERSION}: update ipv2"
        )
    return data


@dataclass(frozen=True)
class SplitData:
    """One split of a dataset: case names and, per kind, one memory-mapped array per case."""

    root: Path
    split: str
    cases: tuple[str, ...]
    arrays: dict[str, list[npt.NDArray[np.float32]]]

    def slice_count(self) -> int:
        first = next(iter(self.arrays.values()), [])
        return int(sum(a.shape[0] for a in first))


def load_split(
    root: str | os.PathLike[str], split: str, kinds: Sequence[str] = ("input", "ndct")
) -> SplitData:
    """Memory-mapped arrays of ``kinds`` for every case of ``split``.

    A kind the dataset was not built with is an error that lists the kinds it has.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    r = Path(root)
    manifest = read_manifest(r)
    have = set(manifest.get("kinds", []))
    missing = [k for k in kinds if k not in have]
    if missing:
        raise InputError(
            f"dataset {r} has no {', '.join(missing)}; it holds {', '.join(sorted(have)) or 'nothing'}"
        )
    cases = tuple(c["case"] for c in manifest["cases"] if c["split"] == split)
    arrays: dict[str, list[npt.NDArray[np.float32]]] = {}
    for kind in kinds:
        arrays[kind] = []
        for case in cases:
            path = r / split / kind / f"{case}.npy"
            if not path.is_file():
                raise InputError(f"dataset {r} is incomplete: {path} is missing")
            arrays[kind].append(np.load(path, mmap_mode="r", allow_pickle=False))
    return SplitData(root=r, split=split, cases=cases, arrays=arrays)
