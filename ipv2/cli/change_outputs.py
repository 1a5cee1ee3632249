"""``ipv2 denoise --change-map``: where its files go, which regions it is summarised over.

The change map (:mod:`ipv2.metrics.change_map`) is written beside the denoised output
as two volumes on the input's grid: ``NAME_difference`` (output - input, HU, float32)
and ``NAME_change_map`` (uint8: 0 unchanged, 1 brighter, 2 darker than the input beyond
its noise). Their names are checked before any denoising, like the output's, so a long
run never ends in a refusal, and nothing existing is replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.volume import Volume
from ipv2.io.volumes import volume_suffix
from ipv2.metrics.change_map import (
    ChangeMap,
    ChangeMapOptions,
    RegionChange,
    change_map,
    regions_from_label_map,
    regions_of_image,
    summarize,
)


@dataclass(frozen=True)
class ChangeMapPaths:
    """The two files of a change map."""

    difference: Path
    labels: Path


def change_map_paths(out: Path) -> ChangeMapPaths:
    """``out.nrrd`` -> ``out_difference.nrrd`` and ``out_change_map.nrrd``; a folder output
    (PNG or DICOM) gets NRRD files beside the folder, named after it."""
    suffix = volume_suffix(out)
    if suffix is None:
        stem, suffix = out.name, ".nrrd"
    else:
        stem = out.name[: -len(suffix)]
    return ChangeMapPaths(
        difference=out.with_name(f"{stem}_difference{suffix}"),
        labels=out.with_name(f"{stem}_change_map{suffix}"),
    )


def check_change_map_outputs(out: Path, source: Path) -> ChangeMapPaths:
    """Refuse, before any work, change-map files that exist or would land in the input."""
    paths = change_map_paths(out)
    for path in (paths.difference, paths.labels):
        resolved = path.resolve()
        if resolved == source or source in resolved.parents:
            raise InputError(f"change map {path} would write into the input; choose another --out")
        if path.exists():
            raise OutputExistsError(
                f"{path} already exists (the change map of --out); choose another --out name"
            )
    return paths


def summary_regions(
    masks_path: Path | None, output: Volume
) -> tuple[dict[str, npt.NDArray[np.bool_]] | None, str]:
    """Regions for the summary and where they came from: the given label map, else masks
    computed from the denoised output.

    The denoised output is used for automatic masks because its lungs and body outline
    are cleaner than the noisy input's; when the masks cannot be found (not a chest,
    too small), the summary covers the whole volume instead.
    """
    if masks_path is not None:
        from ipv2.io.volumes import read_volume

        labels = read_volume(masks_path)
        if labels.shape != output.shape:
            raise InputError(
                f"--change-masks {masks_path} has shape {labels.shape}, the input {output.shape}"
            )
        return regions_from_label_map(labels.array), f"label map {masks_path}"
    regions = regions_of_image(output.array)
    if regions is None:
        return None, "whole volume (no region masks could be computed)"
    return regions, "masks computed from the denoised output"


def compute_change_map(
    source: Volume,
    result: Volume,
    paths: ChangeMapPaths,
    *,
    options: ChangeMapOptions,
    regions: dict[str, npt.NDArray[np.bool_]] | None,
    region_source: str,
) -> tuple[ChangeMap, list[RegionChange], dict[str, Any]]:
    """The map, its per-region figures and its sidecar entry; nothing is written yet, so
    the denoised output goes to disk first and a failure there leaves no orphan maps."""
    cmap = change_map(source.array, result.array, options)
    figures = summarize(cmap, regions)
    entry = {
        "difference": str(paths.difference),
        "labels": str(paths.labels),
        "label_values": {
            "0": "unchanged",
            "1": "brighter beyond noise",
            "2": "darker beyond noise",
        },
        "options": options.to_json(),
        "regions": [f.to_json() for f in figures],
        "region_source": region_source,
    }
    return cmap, figures, entry


def write_change_map(cmap: ChangeMap, result: Volume, paths: ChangeMapPaths) -> None:
    """Both volumes on the output's grid (atomic writes, never replacing a file)."""
    from ipv2.io.volumes import write_volume

    write_volume(result.with_array(cmap.difference), paths.difference, dtype="float32")
    write_volume(result.with_array(cmap.labels), paths.labels, dtype="uint8")
