"""Sets of images to evaluate: one volume, a folder of volumes, a DICOM series or PNGs.

Evaluation compares a prediction set with a label set (and optionally a truth set)
slice by slice or case by case, so each input becomes an :class:`ImageSet` of named
cases, each case a stack of 2D HU slices. Cases are matched by name across sets; a
single-case set matches a single-case set whatever the names. PNG slices carry no HU by
themselves and are read through an explicit window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.core.volume import Volume
from ipv2.io.png_layout import is_png_layout, read_png_slice
from ipv2.io.volumes import list_dicom_series, read_volume, volume_suffix

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Case:
    """One named stack of slices (z, y, x) in HU; PNG slices of mixed sizes stay a list."""

    name: str
    slices: tuple[FloatArray, ...]
    source: str

    @property
    def depth(self) -> int:
        return len(self.slices)

    def stack(self, what: str) -> FloatArray:
        """The slices as one (z, y, x) array; mixed sizes are refused."""
        shapes = {s.shape for s in self.slices}
        if len(shapes) != 1:
            raise InputError(
                f"{what} case '{self.name}' ({self.source}) mixes slice sizes {sorted(shapes)}; "
                "voxel-wise metrics need one grid"
            )
        return np.stack(self.slices)


@dataclass(frozen=True)
class ImageSet:
    """The cases found at one path."""

    path: str
    kind: str  # "volume", "volumes", "dicom" or "png"
    cases: tuple[Case, ...]

    @property
    def slice_count(self) -> int:
        return sum(c.depth for c in self.cases)

    def all_slices(self) -> list[FloatArray]:
        return [s for c in self.cases for s in c.slices]

    def names(self) -> list[str]:
        return [c.name for c in self.cases]


def image_set_from_arrays(
    cases: dict[str, npt.ArrayLike | Volume], path: str = "(in memory)"
) -> ImageSet:
    """Library callers (the demo) evaluate arrays or volumes without writing files."""
    out = []
    for name, value in cases.items():
        arr = value.array if isinstance(value, Volume) else np.asarray(value, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3 or 0 in arr.shape:
            raise InputError(f"case '{name}' must be a 2D slice or a 3D volume, got {arr.shape}")
        out.append(Case(name=name, slices=tuple(arr.astype(np.float32)), source=path))
    if not out:
        raise InputError("an image set needs at least one case")
    return ImageSet(path, "arrays", tuple(out))


def _volume_case(path: Path, name: str) -> Case:
    vol = read_volume(path)
    return Case(name=name, slices=tuple(vol.array), source=str(path))


def case_name(path: Path) -> str:
    """File name without its volume suffix (".nii.gz" counts as one)."""
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def load_image_set(
    path: str | os.PathLike[str], what: str, png_window: HUWindow = DEFAULT_PNG_WINDOW
) -> ImageSet:
    """Read ``path`` as a set: a volume file, a folder of volume files, of PNGs, or DICOM."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist")
    if p.is_file():
        return ImageSet(str(p), "volume", (_volume_case(p, case_name(p)),))
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    volumes = [f for f in files if volume_suffix(f) is not None]
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    if volumes and pngs:
        raise InputError(
            f"{what} folder {p} mixes volume files and PNG slices; put each set in its own folder"
        )
    if volumes:
        cases = tuple(_volume_case(f, case_name(f)) for f in volumes)
        return ImageSet(str(p), "volumes", cases)
    if pngs:
        slices = tuple(read_png_slice(f, png_window).array[0] for f in pngs)
        return ImageSet(str(p), "png", (Case(p.name, slices, str(p)),))
    if is_png_layout(p):
        raise InputError(
            f"{what} {p} is a PNG dataset root; point at the folder of slices to compare, "
            f"e.g. {p}/test/gt for labels"
        )
    if list_dicom_series(p):
        return ImageSet(str(p), "dicom", (_volume_case(p, p.name),))
    raise InputError(
        f"{what} folder {p} holds no volume files (.nrrd, .nii, .nii.gz, .mha), PNG slices "
        "or DICOM series"
    )


def pair_cases(first: ImageSet, second: ImageSet, what: str) -> list[tuple[Case, Case]]:
    """Cases of ``first`` matched to ``second`` by name (single cases match each other)."""
    if len(first.cases) == 1 and len(second.cases) == 1:
        return [(first.cases[0], second.cases[0])]
    by_name = {c.name: c for c in second.cases}
    missing = [c.name for c in first.cases if c.name not in by_name]
    extra = sorted(set(by_name) - set(first.names()))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no {what} for {', '.join(missing[:5])}")
        if extra:
            parts.append(f"{what} without a prediction: {', '.join(extra[:5])}")
        raise InputError(
            f"prediction cases ({first.path}) and {what} cases ({second.path}) do not match: "
            + "; ".join(parts)
            + ". Cases pair by file name"
        )
    return [(c, by_name[c.name]) for c in first.cases]


def check_same_layout(pred: ImageSet, label: ImageSet) -> None:
    """Paired sets: same cases, same slice counts, same slice sizes; else say what differs."""
    for a, b in pair_cases(pred, label, "label"):
        if a.depth != b.depth:
            raise InputError(
                f"case '{a.name}': {a.depth} predicted slices but {b.depth} label slices "
                f"({a.source} vs {b.source}); give matching sets, or --unpaired to compare "
                "the two distributions regardless"
            )
        for k, (s, t) in enumerate(zip(a.slices, b.slices, strict=True)):
            if s.shape != t.shape:
                raise InputError(
                    f"case '{a.name}' slice {k}: prediction is {s.shape[1]}x{s.shape[0]}, label "
                    f"{t.shape[1]}x{t.shape[0]} (width x height); give matching sets, or "
                    "--unpaired to compare the distributions regardless"
                )


def read_label_maps(path: str | os.PathLike[str]) -> dict[str, Volume]:
    """Mask label maps (``ipv2 purify``'s masks file) by case name: one file or a folder."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and volume_suffix(f) is not None)
        if not files:
            raise InputError(f"masks folder {p} holds no label-map volumes")
        return {case_name(f): read_volume(f) for f in files}
    return {case_name(p): read_volume(p)}
