"""The authors' PNG dataset layout: ``<root>/<split>/{lq,gt}/<name>.png``.

Each split folder holds the low-dose slices in ``lq`` and the normal-dose slices in
``gt``, paired by file name, as 8-bit grayscale. An 8-bit gray level has no HU meaning of
its own: it is read and written only through an explicit :class:`HUWindow` (default
:data:`DEFAULT_PNG_WINDOW`, -1024..1024 HU, 8 HU per level), so gray values are never
taken for HU. Anything ambiguous (a file without its partner, a pair of different sizes,
16-bit or coloured images) is refused with a message naming the files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.hu_window import DEFAULT_PNG_WINDOW, HUWindow
from ipv2.core.volume import Volume
from ipv2.io.native_stderr import native_stderr_held
from ipv2.io.volume_limits import check_declared_size

SPLITS: tuple[str, ...] = ("train", "val", "test")
LOW, HIGH = "lq", "gt"


@dataclass(frozen=True)
class PngPair:
    """One slice pair of the layout."""

    split: str
    name: str  # file stem shared by both files
    lq: Path
    gt: Path


def is_png_layout(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds at least one ``<split>/lq`` or ``<split>/gt`` folder."""
    r = Path(root)
    return r.is_dir() and any((r / s / k).is_dir() for s in SPLITS for k in (LOW, HIGH))


def list_png_pairs(root: str | os.PathLike[str], splits: tuple[str, ...] = SPLITS) -> list[PngPair]:
    """All pairs under ``root`` in split then name order; unpaired files are an error."""
    r = Path(root)
    if not is_png_layout(r):
        raise InputError(
            f"{r} is not in the PNG layout: expected folders such as {r}/train/lq and {r}/train/gt"
        )
    pairs: list[PngPair] = []
    problems: list[str] = []
    for split in splits:
        lq = _pngs(r / split / LOW)
        gt = _pngs(r / split / HIGH)
        for name in sorted(set(lq) ^ set(gt)):
            have, missing = (LOW, HIGH) if name in lq else (HIGH, LOW)
            problems.append(f"{split}/{have}/{name}.png has no partner in {split}/{missing}")
        pairs += [PngPair(split, name, lq[name], gt=gt[name]) for name in sorted(set(lq) & set(gt))]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise InputError(f"unpaired PNG files under {r}: {shown}")
    if not pairs:
        raise InputError(f"no PNG pairs found under {r} (looked in {', '.join(splits)})")
    return pairs


def _pngs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"}


def _check_png_header(path: Path) -> None:
    """Refuse a PNG whose declared width x height would not fit, before decoding it.

    Pillow opens lazily (the header only) and has its own decompression-bomb guard; its
    error becomes one line, its warning (a large but possible image) is left to the
    memory limit, which every image passes too.
    """
    # Imported here: Slicer imports this module (through io.volumes) before its optional
    # packages are installed, and Pillow is one of them.
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                bands = len(image.getbands())
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path} declares too many pixels to decode: {exc} A CT slice is far smaller; "
            "the header is damaged, or convert a genuine huge image to a volume file"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's "cannot identify" and kin
        raise InputError(f"cannot read PNG {path}: {exc}") from exc
    # Up to 16 bits a sample: the decoder's buffer before any conversion.
    check_declared_size(str(path), size=(width, height), bytes_per_pixel=2 * bands, unit="pixels")


def read_gray8(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """An 8-bit grayscale PNG as (y, x) uint8; RGB(A) is accepted only when it is gray."""
    p = Path(path)
    _check_png_header(p)
    try:
        with native_stderr_held() as held:
            image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputError(f"cannot read PNG {p}: {str(exc).strip().splitlines()[-1]}") from exc
    problem = held.failure()
    if problem:
        raise InputError(f"cannot read PNG {p}: {problem}")
    held.replay()
    arr = sitk.GetArrayFromImage(image)
    if arr.dtype != np.uint8:
        raise InputError(
            f"{p} stores {arr.dtype} pixels; the PNG layout holds 8-bit slices (a 16-bit PNG "
            "would need its own HU mapping: convert it to a volume file instead)"
        )
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels == 4:
            if not (arr[..., 3] == 255).all():
                raise InputError(f"{p} has transparent pixels; CT slices are opaque grayscale")
            arr = arr[..., :3]
            channels = 3
        if channels == 2:  # gray + alpha
            arr = arr[..., 0]
        elif channels == 3:
            if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()):
                raise InputError(
                    f"{p} is a colour image (its R, G and B channels differ); CT slices are grayscale"
                )
            arr = arr[..., 0]
        else:
            raise InputError(f"{p} has {channels} channels; expected grayscale")
    if arr.ndim != 2:
        raise InputError(f"{p} is not a 2D image (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def read_png_slice(
    path: str | os.PathLike[str],
    window: HUWindow = DEFAULT_PNG_WINDOW,
    pixel_mm: float = 1.0,
) -> Volume:
    """One 8-bit slice as a depth-1 volume in HU through ``window``."""
    gray = read_gray8(path)
    return Volume(window.from_uint8(gray), spacing=(pixel_mm, pixel_mm, 1.0))


def read_png_pair(
    pair: PngPair, window: HUWindow = DEFAULT_PNG_WINDOW, pixel_mm: float = 1.0
) -> tuple[Volume, Volume]:
    """``(U, N)`` for one pair; different image sizes are an error naming both files."""
    u = read_png_slice(pair.lq, window, pixel_mm)
    n = read_png_slice(pair.gt, window, pixel_mm)
    if u.shape != n.shape:
        raise InputError(
            f"PNG pair '{pair.split}/{pair.name}' has different sizes: {pair.lq} is "
            f"{u.shape[2]}x{u.shape[1]}, {pair.gt} is {n.shape[2]}x{n.shape[1]} (width x height)"
        )
    return u, n


def write_png_slice(
    hu: npt.ArrayLike, path: str | os.PathLike[str], window: HUWindow = DEFAULT_PNG_WINDOW
) -> Path:
    """Write one slice (2D, or a depth-1 volume array) as 8-bit through ``window``."""
    p = Path(path)
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"a PNG holds one slice; got an array of shape {arr.shape}")
    if p.exists():
        raise OutputExistsError(f"{p} already exists; choose another folder")
    sitk.WriteImage(sitk.GetImageFromArray(window.to_uint8(arr)), str(p))
    return p


def write_png_pair(
    root: str | os.PathLike[str],
    split: str,
    name: str,
    *,
    u: npt.ArrayLike,
    n: npt.ArrayLike,
    window: HUWindow = DEFAULT_PNG_WINDOW,
) -> PngPair:
    """Write one pair into the layout (folders created as needed)."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    r = Path(root)
    paths = []
    for kind, hu in ((LOW, u), (HIGH, n)):
        folder = r / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(write_png_slice(hu, folder / f"{name}.png", window))
    return PngPair(split, name, paths[0], gt=paths[1])
