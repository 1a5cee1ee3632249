"""Splits, building from the PNG layout and from a manifest, reading back memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ipv2.core.errors import InputError
from ipv2.data.build import BuildConfig, build_dataset
from ipv2.data.format import assign_splits, load_split, read_manifest, split_sizes
from ipv2.io.png_layout import write_png_pair
from ipv2.io.volumes import write_volume
from ipv2.phantom import make_phantom
from ipv2.purification.masks import purification_masks
from ipv2.purification.recipe import Recipe


def test_split_sizes_match_the_authors() -> None:
    assert split_sizes(4310) == (3017, 646, 647)
    assert split_sizes(20) == (14, 3, 3)


def test_split_is_seeded_and_keeps_patients_together() -> None:
    cases = [f"c{i}" for i in range(60)]
    patients = [f"p{i // 5}" for i in range(60)]
    a = assign_splits(cases, patients, seed=7)
    assert a == assign_splits(cases, patients, seed=7)
    assert a != assign_splits(cases, patients, seed=8)
    for p in set(patients):
        assert len({s for s, q in zip(a, patients, strict=True) if q == p}) == 1
    by_pair = assign_splits(cases, None, seed=7)
    assert [by_pair.count(s) for s in ("train", "val", "test")] == [42, 9, 9]


@pytest.fixture(scope="module")
def png_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pngs")
    case = make_phantom(size=64, slices=4, seed=2)
    for k, split in enumerate(("train", "train", "val", "test")):
        write_png_pair(root, split, f"s{k}", u=case.uldct.array[k], n=case.ndct.array[k])
    return root


def test_build_from_png_layout(png_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = build_dataset(png_source, out, BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    assert manifest["kinds"] == ["input", "label", "lung", "ndct", "uldct"]
    assert [c["split"] for c in manifest["cases"]] == ["train", "train", "val", "test"]
    data = load_split(out, "train", ("input", "label", "ndct"))
    assert data.cases == ("s0", "s1") and data.slice_count() == 2
    arr = data.arrays["input"][0]
    assert isinstance(arr, np.memmap) and arr.dtype == np.float32 and arr.shape == (1, 64, 64)
    assert read_manifest(out)["parameters"]["T"] == 0.1
    with pytest.raises(InputError, match="has no sim"):
        load_split(out, "train", ("sim",))


def test_ipv2_without_weak_denoiser_builds_the_rest(png_source: Path, tmp_path: Path) -> None:
    """As in ``purify``: Module 3 is skipped, modules 1,2 run, and one note says how to add it."""
    manifest = build_dataset(png_source, tmp_path / "ds", BuildConfig(recipe=Recipe()))
    assert manifest["modules"] == [1, 2]
    assert {"input", "sim", "label", "lung", "ndct"} <= set(manifest["kinds"])
    assert manifest["parameters"]["formulas"]["label"] == "(L|B)*U + (1-(L|B))*N"
    texts = manifest["warnings"] + [w for c in manifest["cases"] for w in c["warnings"]]
    said = " ".join(texts)
    assert said.count("Module 3") == 1 and said.count("--weak-denoiser WEAK") == 1
    assert "needs W" not in said  # the old doubled "Module 3 ... needs" wording is gone


def test_build_from_manifest_with_precomputed_sources(tmp_path: Path) -> None:
    rows = []
    for i in range(3):
        case = make_phantom(size=64, slices=2, seed=10 + i)
        files = {}
        for kind, vol in (
            ("uldct", case.uldct),
            ("ndct", case.ndct),
            ("simulated", case.ndct.with_array(case.ndct.array + 3.0)),
            ("weak", case.uldct.with_array(case.clean_ld.array)),
        ):
            files[kind] = f"{kind}{i}.nrrd"
            write_volume(vol, tmp_path / files[kind])
        rows.append({**files, "patient": f"P{i}", "case": f"case{i}"})
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    out = tmp_path / "ds"
    manifest = build_dataset(tmp_path / "pairs.json", out, BuildConfig(recipe=Recipe(), seed=1))
    assert {"input", "label", "sim", "lung"} <= set(manifest["kinds"])
    assert manifest["split"]["rule"] == "seeded split by patient"
    c = manifest["cases"][0]
    assert c["spacing"] and len(c["lung_fraction"]) == 2 and c["patient"] == "P0"
    split = c["split"]
    lung = np.load(out / split / "lung" / "case0.npy") > 0.5
    inp = np.load(out / split / "input" / "case0.npy")
    sim = np.load(out / split / "sim" / "case0.npy")
    u = np.load(out / split / "uldct" / "case0.npy")
    # Module 1's region: the stored lung mask plus the band where the outline moved.
    n = np.load(out / split / "ndct" / "case0.npy")
    lung |= purification_masks(u, n).outline_band
    assert np.array_equal(inp[lung], sim[lung]) and np.array_equal(inp[~lung], u[~lung])


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    img = np.full((8, 8), -1000.0, np.float32)
    write_png_pair(tmp_path / "src", "train", "a", u=img, n=img)
    write_png_pair(tmp_path / "src", "train", "b", u=img, n=np.full((8, 9), -1000.0, np.float32))
    with pytest.raises(InputError, match="different sizes"):
        build_dataset(tmp_path / "src", tmp_path / "out", BuildConfig())
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_module_2_dose_fitted_to_each_cases_uldct(tmp_path: Path) -> None:
    """With --match-uldct, sim(N) carries the noise level of the real uLDCT of its case."""
    from scipy import ndimage

    case = make_phantom(size=128, slices=4, seed=21)
    write_volume(case.uldct, tmp_path / "u.nrrd")
    write_volume(case.ndct, tmp_path / "n.nrrd")
    (tmp_path / "pairs.csv").write_text("uldct,ndct,split,case\nu.nrrd,n.nrrd,train,c0\n")
    recipe = Recipe.for_strategy("ipv2", frozenset({1, 2}))
    plain = build_dataset(tmp_path / "pairs.csv", tmp_path / "a", BuildConfig(recipe=recipe))
    fitted = build_dataset(
        tmp_path / "pairs.csv", tmp_path / "b", BuildConfig(recipe=recipe, match_uldct=True)
    )
    assert (
        fitted["parameters"]["match_uldct"] is True and plain["parameters"]["match_uldct"] is False
    )
    core = ndimage.binary_erosion(case.masks_ref.lung, np.ones((1, 5, 5)))
    real = (case.uldct.array - case.clean_ld.array)[
        ndimage.binary_erosion(case.masks_ld.lung, np.ones((1, 5, 5)))
    ].std()

    def lung_noise(root: Path) -> float:
        sim = np.load(root / "train" / "sim" / "c0.npy")
        return float((sim - case.clean_ref.array)[core].std())

    assert abs(lung_noise(tmp_path / "b") - real) < 0.25 * real
    assert lung_noise(tmp_path / "a") < 0.6 * real  # the plain 2% dose is too quiet at 128 px
