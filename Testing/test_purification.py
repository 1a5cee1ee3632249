"""Fusions: hypothesis properties (between inputs, exact limits) and the recipe table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.phantom import make_phantom
from ipv2.purification.fusion import (
    blend,
    evaluation_label,
    feather,
    ipv1_input,
    ipv1_label,
    ipv2_input,
    ipv2_label,
    texture_mix,
    training_input,
)
from ipv2.purification.masks import purification_masks
from ipv2.purification.modules import Module, parse_modules
from ipv2.purification.pipeline import purify_pair
from ipv2.purification.recipe import Recipe

SHAPE = (2, 4, 5)
# fill=nothing draws every element, so arrays are dense rather than one repeated value.
hu = arrays(np.float32, SHAPE, elements=st.floats(-3024, 3071, width=32), fill=st.nothing())
soft = arrays(np.float32, SHAPE, elements=st.floats(0, 1, width=32), fill=st.nothing())
hard = arrays(np.bool_, SHAPE, elements=st.booleans(), fill=st.nothing())


def between(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(out >= np.minimum(a, b)) and np.all(out <= np.maximum(a, b)))


@settings(max_examples=60, deadline=None)
@given(a=hu, b=hu, w=soft, m=hard)
def test_blend_between_inputs(a: np.ndarray, b: np.ndarray, w: np.ndarray, m: np.ndarray) -> None:
    assert between(blend(a, b, w), a, b)
    assert between(blend(a, b, m), a, b)
    assert np.array_equal(blend(a, b, np.zeros(SHAPE, np.float32)), a)
    assert np.array_equal(blend(a, b, np.ones(SHAPE, np.float32)), b)
    assert np.array_equal(blend(a, b, np.zeros(SHAPE, bool)), a)


@settings(max_examples=60, deadline=None)
@given(u=hu, n=hu, s=hu, w=hu, m=soft, t=st.floats(0, 1))
def test_fusions(
    u: np.ndarray, n: np.ndarray, s: np.ndarray, w: np.ndarray, m: np.ndarray, t: float
) -> None:
    zero = np.zeros(SHAPE, np.float32)
    assert between(ipv1_input(u, n, m, t=t), u, n)
    assert between(ipv1_label(u, n, m), u, n)
    assert between(ipv2_input(u, s, m), u, s)
    assert between(ipv2_label(n, w, m), n, w)
    assert np.array_equal(ipv2_input(u, s, zero), u)  # M = 0 gives the input back
    assert np.array_equal(ipv2_label(n, w, zero), n)
    assert np.array_equal(ipv1_label(u, n, zero), n)
    assert np.array_equal(ipv1_input(u, n, zero, t=0.0), u)  # T = 0: U outside the mask
    assert np.array_equal(ipv1_input(u, n, m, t=1.0), n)  # T = 1: N everywhere
    assert np.array_equal(texture_mix(u, n, 0.0), u)
    assert np.array_equal(texture_mix(u, n, 1.0), n)


def test_parameter_errors() -> None:
    a = np.zeros(SHAPE, np.float32)
    with pytest.raises(InputError):
        blend(a, a, np.full(SHAPE, 1.5, np.float32))
    with pytest.raises(InputError):
        texture_mix(a, a, -0.1)
    with pytest.raises(InputError):
        parse_modules("1,4")
    assert parse_modules("none") == frozenset() and parse_modules("3,1") == {1, 3}
    assert Recipe.for_strategy("ipv1").modules == frozenset()
    assert Recipe.for_strategy("ipv2").modules == {1, 2, 3}


def test_feathering_is_soft_and_bounded() -> None:
    mask = np.zeros((1, 32, 32), bool)
    mask[0, 8:24, 8:24] = True
    soft_mask = feather(mask, 1.5)
    assert soft_mask.dtype == np.float32
    assert soft_mask.min() >= 0.0 and soft_mask.max() <= 1.0
    assert 0.2 < soft_mask[0, 8, 16] < 0.8 and soft_mask[0, 16, 16] > 0.99
    assert feather(mask, 0.0) is mask


# Rows of method.md section 6: modules -> (input source in R, outside R; label in R, outside R)
ROWS = [
    ("ipv1", set(), "common"),
    ("ipv1", {1}, "lung"),
    ("ipv1", {2}, "common"),
    ("ipv1", {1, 2}, "lung"),
    ("ipv1", {3}, "common"),
    ("ipv1", {1, 3}, "lung"),
    ("ipv2", {1, 2, 3}, "lung"),
]


@pytest.mark.parametrize(("strategy", "modules", "region_name"), ROWS)
def test_ablation_regions(strategy: str, modules: set[int], region_name: str) -> None:
    case = make_phantom(size=64, slices=1, seed=3)
    u, n = case.uldct.array, case.ndct.array
    s, w = n + 1000.0, u - 1000.0  # recognisable stand-ins for sim(N) and weak(U)
    t = 0.25
    recipe = Recipe(strategy=strategy, modules=frozenset(modules), t=t)  # type: ignore[arg-type]
    masks = purification_masks(u, n, recipe.masks)
    # Module 1's region: L plus the band where only one image shows background.
    r = masks.lung | masks.outline_band if region_name == "lung" else masks.common
    assert r.any() and (~r).any()
    inp = training_input(recipe, masks, u, n=n, s=s)
    lab = evaluation_label(recipe, masks, u, n=n, w=w)
    if 2 in modules:
        assert np.array_equal(inp[r], s[r]) and np.array_equal(inp[~r], u[~r])
    else:
        mix = (1 - np.float32(t)) * u + np.float32(t) * n
        assert np.array_equal(inp[r], n[r]) and np.allclose(inp[~r], mix[~r], atol=1e-3)
    if 3 in modules:
        assert np.array_equal(lab[r], w[r]) and np.array_equal(lab[~r], n[~r])
    else:
        assert np.array_equal(lab[r], u[r]) and np.array_equal(lab[~r], n[~r])
    if region_name == "lung":  # Module 1: background is not in the region
        assert not (r & masks.background).any() and (masks.common & ~r).any()


def test_purify_pair_keeps_padding_and_reports_missing_sources() -> None:
    case = make_phantom(size=64, slices=2, seed=1, padding_value=-3024.0)
    result = purify_pair(case.uldct, case.ndct, Recipe())  # IPv2 with no S and no W
    assert result.training_input is None and result.evaluation_label is None
    assert any("Module 2" in w for w in result.report["warnings"])  # type: ignore[attr-defined]
    sim = case.ndct.with_array(case.ndct.array + 5.0)
    done = purify_pair(case.uldct, case.ndct, Recipe(modules=frozenset({1, 2})), simulated=sim)
    assert done.training_input is not None
    pad = case.uldct.array == -3024.0
    assert pad.any() and np.all(done.training_input.array[pad] == -3024.0)
    assert set(np.unique(done.label_map.array)) == {0.0, 1.0, 2.0}
    assert len(done.report["lung_fraction"]) == 2  # type: ignore[arg-type]


def test_pipeline_sources_s_and_w_through_the_given_functions() -> None:
    """S and W come from the functions only when needed; a given volume wins; U is passed on."""
    case = make_phantom(size=64, slices=2, seed=2)
    u, n = case.uldct, case.ndct
    calls: list[str] = []

    def simulate(nn: Volume, uu: Volume) -> Volume:
        calls.append("S")
        assert nn is n and uu is u
        return nn.with_array(nn.array + 7.0)

    def weak(uu: Volume) -> Volume:
        calls.append("W")
        return uu.with_array(uu.array - 9.0)

    full = purify_pair(u, n, Recipe(), simulate=simulate, weak_denoise=weak)
    assert calls == ["S", "W"]
    assert full.sources == {"S": "simulated from N", "W": "weak denoiser applied to U"}
    assert full.simulated is not None and full.weak is not None
    lung = full.masks.lung
    assert full.training_input is not None and full.evaluation_label is not None
    assert np.array_equal(full.training_input.array[lung], n.array[lung] + 7.0)
    assert np.array_equal(full.evaluation_label.array[lung], u.array[lung] - 9.0)

    calls.clear()
    given = n.with_array(n.array + 1.0)
    only_input = purify_pair(
        u, n, Recipe(), simulated=given, simulate=simulate, weak_denoise=weak, build_label=False
    )
    assert calls == [] and only_input.evaluation_label is None
    assert only_input.sources == {"S": "given"} and only_input.training_input is not None

    ipv1 = purify_pair(u, n, Recipe.for_strategy("ipv1"), simulate=simulate, weak_denoise=weak)
    assert calls == [] and ipv1.simulated is None and ipv1.weak is None


def test_pipeline_refuses_missing_sources_before_slow_work_when_asked() -> None:
    case = make_phantom(size=32, slices=1, seed=4)
    simulated: list[bool] = []

    def simulate(nn: Volume, uu: Volume) -> Volume:
        simulated.append(True)
        return nn

    with pytest.raises(InputError, match="Module 3 \\(Remove Noise\\)"):
        purify_pair(case.uldct, case.ndct, Recipe(), simulate=simulate, require_all=True)
    assert simulated == []  # refused before simulating
    u = case.uldct
    wrong = Volume(
        np.zeros((1, 16, 16), np.float32), u.spacing, u.origin, direction=u.direction.copy()
    )
    with pytest.raises(InputError, match="not on the same grid"):
        purify_pair(case.uldct, case.ndct, Recipe(), simulated=wrong)


def test_modules_by_name_and_number() -> None:
    assert parse_modules("1,add-noise,Remove Noise") == set(Module)
    assert Module.ADD_NOISE == 2 and str(Module.REMOVE_NOISE) == "3"
    assert Module.REMOVE_BACKGROUND.title == "Remove Background"
    assert Recipe(modules=frozenset({2})).modules == {Module.ADD_NOISE}
    assert Recipe(modules=frozenset({1, 3})).to_json()["module_names"] == [
        "Remove Background",
        "Remove Noise",
    ]
    with pytest.raises(InputError, match="unknown IPv2 module"):
        parse_modules("denoise")


def test_module_1_fuses_the_band_where_the_body_outline_moved() -> None:
    """Issue 14: where N shows air and U shows the body (the outline moved between the
    scans), an IPv2 pair must agree with N: input S, label from U's side (W or U).

    The paper's literal L leaves the band to U (input) and N (label): tissue in, air out,
    which taught the network to darken the body's rim.
    """
    case = make_phantom(size=64, slices=2, seed=3)
    u, n = case.uldct.array, case.ndct.array
    s, w = n + 1000.0, u - 1000.0
    aligned = Recipe(strategy="ipv2")
    literal = Recipe(strategy="ipv2", align_outline=False)
    masks = purification_masks(u, n, aligned.masks)
    band = masks.outline_band
    rim = band & masks.n.background & ~masks.u.background  # air in N, tissue in U
    assert rim.sum() > 20  # the phantom's chest wall expands between the phases
    inp = training_input(aligned, masks, u, n=n, s=s)
    old = training_input(literal, masks, u, n=n, s=s)
    assert np.array_equal(inp[rim], s[rim]) and np.array_equal(old[rim], u[rim])
    label = evaluation_label(aligned, masks, u, n=n, w=w)
    assert np.array_equal(label[rim], w[rim])
    # Outside L and the band nothing changes.
    rest = ~(masks.lung | band)
    assert np.array_equal(inp[rest], old[rest])
    assert aligned.describe()["input"] == "(L|B)*S + (1-(L|B))*U"
    assert aligned.to_json()["align_outline"] is True
