"""IPv2Denoise's node workflows on a real vtkMRMLScene: preview, purify, denoise job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import tiny_checkpoint

from ipv2.phantom import make_phantom
from ipv2.purification.fusion import training_input
from ipv2.purification.masks import MaskOptions, purification_masks
from ipv2.purification.recipe import Recipe
from ipv2.slicer import node_from_volume, segment_array, volume_from_node
from ipv2.slicer import workflows as wf


@pytest.fixture(scope="module")
def case():  # type: ignore[no-untyped-def]
    return make_phantom(size=128, slices=6, seed=3)


@pytest.fixture()
def nodes(scene, case):  # type: ignore[no-untyped-def]
    return node_from_volume(case.uldct, "uLDCT", scene), node_from_volume(case.ndct, "NDCT", scene)


def test_preview_slice_gives_the_engine_masks(nodes, case) -> None:  # type: ignore[no-untyped-def]
    u_node, n_node = nodes
    opts = MaskOptions(opening_radius=1)
    k = 3
    preview = wf.preview_slice(u_node, n_node, k, options=opts)
    engine = purification_masks(case.uldct.array[k], case.ndct.array[k], opts)
    lung = segment_array(preview.segmentation, "lung", u_node)
    np.testing.assert_array_equal(lung[k], engine.lung[0])
    assert not lung[np.arange(6) != k].any()
    background = segment_array(preview.segmentation, "background", u_node)
    np.testing.assert_array_equal(background[k], engine.background[0])
    assert preview.lung_fraction == pytest.approx(engine.lung.mean())
    # A second preview on another slice reuses the node and replaces the segments.
    again = wf.preview_slice(u_node, n_node, 1, options=opts, segmentation=preview.segmentation)
    assert again.segmentation is preview.segmentation
    assert not segment_array(again.segmentation, "lung", u_node)[k].any()


def test_preview_without_ndct_uses_the_uldct_alone(nodes, case) -> None:  # type: ignore[no-untyped-def]
    u_node, _ = nodes
    preview = wf.preview_slice(u_node, None, 2)
    engine = purification_masks(case.uldct.array[2], case.uldct.array[2])
    np.testing.assert_array_equal(
        segment_array(preview.segmentation, "lung", u_node)[2], engine.lung[0]
    )


def test_slice_index_follows_ras_position(nodes) -> None:  # type: ignore[no-untyped-def]
    u_node, _ = nodes
    vol = volume_from_node(u_node)
    for k in (0, 4):
        lps = np.asarray(vol.origin) + vol.direction @ (np.array([10, 20, k]) * vol.spacing)
        ras = (-lps[0], -lps[1], lps[2])
        assert wf.slice_index_at(u_node, ras) == k


def test_whole_volume_masks_match_engine(nodes, case) -> None:  # type: ignore[no-untyped-def]
    u_node, n_node = nodes
    seen: list[int] = []
    seg = wf.masks_for_volume(u_node, n_node, progress=lambda d, t: seen.append(d), chunk=4)
    engine = purification_masks(case.uldct.array, case.ndct.array)
    np.testing.assert_array_equal(segment_array(seg, "lung", u_node), engine.lung)
    assert seen == [4, 6]


def test_fusion_slice_matches_engine_and_sits_at_its_slice(nodes, case) -> None:  # type: ignore[no-untyped-def]
    u_node, n_node = nodes
    k = 2
    fused = wf.fusion_slice(u_node, n_node, k, kind="ipv1-input")
    masks = purification_masks(case.uldct.array[k], case.ndct.array[k])
    recipe = Recipe.for_strategy("ipv1")
    expected = training_input(recipe, masks, case.uldct.array[k][None], n=case.ndct.array[k][None])
    np.testing.assert_allclose(fused.array, expected)
    assert fused.origin[2] == pytest.approx(case.uldct.origin[2] + k * case.uldct.spacing[2])
    ipv2 = wf.fusion_slice(u_node, n_node, k, kind="ipv2-input")
    assert ipv2.shape == (1, 128, 128)
    from ipv2.core.errors import InputError

    with pytest.raises(InputError, match="weak denoiser"):
        wf.fusion_slice(u_node, n_node, k, kind="ipv2-label")


def test_purify_nodes_writes_named_nodes_with_geometry(scene, nodes, case) -> None:  # type: ignore[no-untyped-def]
    u_node, n_node = nodes
    out = wf.purify_nodes(u_node, n_node, strategy="ipv1", scene=scene)
    assert out["training_input"].GetName() == "uLDCT IPV1 training input"
    assert out["evaluation_label"].GetName() == "uLDCT IPV1 label"
    vol = volume_from_node(out["training_input"])
    assert vol.grid_differences(case.uldct) == []
    np.testing.assert_allclose(vol.origin, case.uldct.origin)
    seg = out["masks"].GetSegmentation()
    assert {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())} == {
        "background",
        "body",
        "lung",
    }


def test_denoise_job_runs_and_loads_result(scene, nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    u_node, _ = nodes
    model = tiny_checkpoint(tmp_path / "model")
    summary = wf.model_summary(str(model))
    assert "ffm network" in summary and "flow scheme" in summary
    run = wf.start_denoise(
        u_node,
        str(model),
        wf.DenoiseSettings(steps=1, device="cpu"),
        workdir=str(tmp_path / "work"),
    )
    assert run.job.wait(timeout=180) == 0, run.job.log_tail()
    events = run.job.poll()
    assert any(e["event"] == "progress" for e in events)
    node = wf.finish_denoise(run, scene)
    assert node.GetName() == "uLDCT IPv2 denoised"
    out = volume_from_node(node)
    assert out.grid_differences(volume_from_node(u_node)) == []
    assert not (tmp_path / "work").exists()


def test_denoise_node_blocks_and_returns_the_result(scene, nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    u_node, _ = nodes
    model = tiny_checkpoint(tmp_path / "model", arch="redcnn")
    node = wf.denoise_node(
        u_node, str(model), wf.DenoiseSettings(device="cpu"), timeout=180, scene=scene
    )
    assert node.GetName() == "uLDCT IPv2 denoised"
    assert volume_from_node(node).grid_differences(volume_from_node(u_node)) == []


def test_bad_model_is_refused_before_any_work(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import InputError

    u_node, _ = nodes
    with pytest.raises(InputError):
        wf.start_denoise(u_node, str(tmp_path), workdir=str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def _panel(u_node, n_node, **overrides):  # type: ignore[no-untyped-def]
    """Values as the IPv2Denoise parameter node holds them (the panel shows readable labels)."""
    from ipv2.slicer.denoise_logic import panel_values

    base = dict(fusionKind="IPv1 label", device="cpu", halfPrecision=False)
    return panel_values(u_node, n_node, **{**base, **overrides})


def test_panel_logic_drives_the_workflows(scene, nodes, case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin

    u_node, n_node = nodes
    logic = DenoiseLogicMixin()
    p = _panel(u_node, n_node, useFixedThreshold=True, fixedThreshold=-300.0)
    assert logic.maskOptions(p).threshold_hu == -300.0
    preview = logic.previewSlice(p, 1)
    assert preview.thresholds_hu == [-300.0]
    assert "Slice 1" in preview.describe()
    node = logic.previewFusion(p, 1).poll().outcome.node  # IPv1: computed at once
    assert node.GetName() == "uLDCT IPv1 label preview"
    assert logic.previewFusion(p, 2).poll().outcome.node is node  # reused, not piling up
    assert logic.describeModel("") == "No model selected."
    assert logic.describeModel(str(tmp_path)).startswith("Not a usable model")
    # Purified volumes, denoising and IPv2 previews run as background jobs: see
    # Testing/test_engine_tasks.py.
