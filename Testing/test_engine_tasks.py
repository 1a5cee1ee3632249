"""IPv2Denoise's background work as EngineTasks (issue 13, item 10), with real engine jobs
on a real MRML scene (slicer-core): denoising, the purified volumes and the IPv2 fusion
preview run as child processes, report progress, cancel without a failure, and load
their result; a closed scene ends them quietly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from factories import follow, tiny_checkpoint

from ipv2.phantom import PhantomCase, make_phantom
from ipv2.slicer import node_from_volume, volume_from_node


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return make_phantom(64, 3, seed=5)


def _logic() -> Any:
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin
    from ipv2.slicer.dicom_export import DicomExportMixin

    class Logic(DenoiseLogicMixin, DicomExportMixin):  # the module's logic, minus Slicer's base
        pass

    return Logic()


def _panel(u_node: Any, n_node: Any = None, **values: Any) -> SimpleNamespace:
    from ipv2.slicer.denoise_logic import panel_values

    base = dict(steps=1, device="cpu", halfPrecision=False)
    return panel_values(u_node, n_node, **{**base, **values})


def test_panel_values_name_every_parameter_of_the_module() -> None:
    from module_checks import parameter_fields

    from ipv2.slicer.denoise_logic import panel_values

    module = Path(__file__).resolve().parents[1] / "IPv2Denoise/IPv2Denoise.py"
    assert set(vars(panel_values())) == set(parameter_fields(module, "IPv2DenoiseParameterNode"))


def _volumes(scene: Any) -> list[str]:
    nodes = scene.GetNodesByClass("vtkMRMLVolumeNode")
    return sorted(nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems()))


# -- denoising -----------------------------------------------------------------------------


def test_a_denoise_task_ends_as_a_node_a_cancel_line_or_a_failure(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.dicom_export import SOURCE_REFERENCE
    from ipv2.slicer.engine_task import CANCELLED

    logic = _logic()
    source = node_from_volume(make_phantom(32, 2, seed=1).uldct, "uLDCT", scene)
    model = tiny_checkpoint(tmp_path / "m")
    p = _panel(source, modelPath=model)
    task = logic.startDenoise(p, workdir=str(tmp_path / "ok"))
    assert task.job.pid != os.getpid() and task.kind == "denoise"
    views = follow(task)
    assert "sampler: 1 step (as given)" in [line for v in views for line in v.log]
    outcome = views[-1].outcome
    assert outcome.node.GetName() == "uLDCT IPv2 denoised" and p.denoisedVolume is outcome.node
    assert outcome.node.GetNodeReference(SOURCE_REFERENCE) is source and not outcome.failed
    assert not (tmp_path / "ok").exists() and views[-1].fraction == 1.0
    # Cancel: the job is stopped and discarded; a log line, never a failure.
    count = scene.GetNumberOfNodes()
    cancelled = logic.startDenoise(p, workdir=str(tmp_path / "cancel"))
    assert cancelled.cancel().startswith("Cancelling")
    outcome = follow(cancelled)[-1].outcome
    assert (outcome.node, outcome.message, outcome.failed) == (None, CANCELLED, False)
    assert not cancelled.job.running and not (tmp_path / "cancel").exists()
    # A run the engine refuses (a model.json asking a million steps, no curve to choose
    # from): the message names the problem, the details carry the job's log.
    meta = json.loads((model / "model.json").read_text())
    meta["scheme"]["params"]["steps"] = 1_000_000
    (model / "model.json").write_text(json.dumps(meta))
    p.steps = 0
    failed = logic.startDenoise(p, workdir=str(tmp_path / "fail"))
    outcome = follow(failed)[-1].outcome
    assert outcome.node is None and outcome.failed
    assert outcome.message.startswith("Denoising failed:")
    assert "1000000 sampler steps" in outcome.message + outcome.details
    assert not (tmp_path / "fail").exists() and scene.GetNumberOfNodes() == count


def test_a_result_is_shown_beside_the_pair_it_was_made_from(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The selectors stay usable while a task runs; the compare layout at its end must
    # show the result's own source, not whatever is selected then.
    logic = _logic()
    phantom = make_phantom(32, 2, seed=2)
    u_node = node_from_volume(phantom.uldct, "uLDCT", scene)
    n_node = node_from_volume(phantom.ndct, "NDCT", scene)
    p = _panel(u_node, n_node, modelPath=tiny_checkpoint(tmp_path / "m"))
    task = logic.startDenoise(p, workdir=str(tmp_path / "w"))
    p.uldctVolume = node_from_volume(phantom.ndct, "another scan", scene)
    scene.RemoveNode(n_node)
    assert follow(task)[-1].outcome.node is not None
    assert task.sources == (u_node, None)  # the deleted NDCT is not shown
    quick = logic.previewFusion(_panel(u_node, u_node, fusionKind="IPv1 training input"), 0)
    assert quick.sources == (u_node, u_node)


def test_the_output_volume_selector_is_written_and_inputs_are_refused(
    scene, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import IPv2Error

    logic = _logic()
    phantom = make_phantom(32, 2, seed=2)
    source = node_from_volume(phantom.uldct, "uLDCT", scene)
    ndct = node_from_volume(phantom.ndct, "NDCT", scene)
    chosen = node_from_volume(phantom.ndct, "my result", scene)
    p = _panel(source, ndct, modelPath=tiny_checkpoint(tmp_path / "m"), outputVolume=chosen)
    outcome = follow(logic.startDenoise(p, workdir=str(tmp_path / "w")))[-1].outcome
    assert outcome.node is chosen and p.denoisedVolume is chosen
    assert not np.array_equal(volume_from_node(chosen).array, phantom.ndct.array)
    assert _volumes(scene) == ["NDCT", "my result", "uLDCT"]  # no new node
    # Reused for a second run: the old change map is dropped, not shown as this run's.
    chosen.SetNodeReferenceID("ipv2ChangeMap", source.GetID())
    chosen.SetNodeReferenceID("ipv2ChangeDifference", source.GetID())
    chosen.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")  # loaded from DICOM
    assert follow(logic.startDenoise(p, workdir=str(tmp_path / "w2")))[-1].outcome.node is chosen
    assert chosen.GetNodeReference("ipv2ChangeMap") is None
    assert chosen.GetNodeReference("ipv2ChangeDifference") is None
    assert chosen.GetAttribute("DICOM.instanceUIDs") is None
    # The chosen output deleted during the run: the result goes to a new node instead.
    doomed = node_from_volume(phantom.ndct, "doomed", scene)
    p.outputVolume = doomed
    task = logic.startDenoise(p, workdir=str(tmp_path / "w3"))
    scene.RemoveNode(doomed)
    fresh = follow(task)[-1].outcome.node
    assert fresh is not doomed and fresh.GetScene() is scene
    assert fresh.GetName() == "uLDCT IPv2 denoised"
    for an_input in (source, ndct):  # never overwrite what the run reads
        p.outputVolume = an_input
        with pytest.raises(IPv2Error, match="is an input of this run"):
            logic.startDenoise(p, workdir=str(tmp_path / "refused"))
        assert not (tmp_path / "refused").exists()


# -- purified volumes and the fusion preview -----------------------------------------------


def test_purified_volumes_are_built_by_a_background_job_like_in_process(
    scene, case, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer import workflows

    logic = _logic()
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    n_node = node_from_volume(case.ndct, "NDCT", scene)
    task = logic.createFusionVolumes(_panel(u_node, n_node), workdir=str(tmp_path / "w"))
    assert task.job.running and task.job.pid != os.getpid()  # not in Slicer's process
    assert (tmp_path / "w" / "uldct.nrrd").exists()
    views = follow(task)
    assert views[0].status.startswith("IPV2 purified volumes: Elapsed")
    created = views[-1].outcome.node
    assert created["training_input"].GetName() == "uLDCT IPV2 training input"
    assert "evaluation_label" in created and created["masks"].GetName() == "uLDCT IPV2 masks"
    assert not (tmp_path / "w").exists()
    # The training input: the same numbers as the in-process pipeline the panel used to
    # run. Without a weak denoiser the label is built without Module 3, and the log says so.
    reference = workflows.purify_nodes(u_node, n_node, strategy="ipv2")
    np.testing.assert_allclose(
        volume_from_node(created["training_input"]).array,
        volume_from_node(reference["training_input"]).array,
        atol=0.01,
    )
    assert any("Module 3" in line for view in views for line in view.log)
    lung = created["masks"].GetSegmentation().GetSegment("lung")
    assert lung is not None and lung.GetName()


def test_cancelling_or_closing_leaves_no_nodes_no_files_and_no_failure(
    scene, case, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.engine_task import CANCELLED

    logic = _logic()
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    n_node = node_from_volume(case.ndct, "NDCT", scene)
    before = _volumes(scene)
    task = logic.createFusionVolumes(_panel(u_node, n_node), workdir=str(tmp_path / "c"))
    task.cancel()
    outcome = follow(task)[-1].outcome
    assert outcome.message == CANCELLED and not outcome.failed and outcome.node is None
    assert _volumes(scene) == before and not (tmp_path / "c").exists()
    # Scene close: the task ends at once, killed and discarded, and later polls are quiet.
    closing = logic.createFusionVolumes(_panel(u_node, n_node), workdir=str(tmp_path / "x"))
    closing.close()
    assert not closing.job.running and not (tmp_path / "x").exists()
    view = closing.poll()
    assert view.outcome is None and not view.running


def test_ipv1_previews_at_once_and_ipv2_previews_in_a_job(scene, case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer import workflows

    logic = _logic()
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    n_node = node_from_volume(case.ndct, "NDCT", scene)
    # A user's own volume that happens to carry the preview's name is never refilled.
    mine = node_from_volume(case.ndct, "uLDCT IPv1 label preview", scene)
    quick = logic.previewFusion(_panel(u_node, n_node, fusionKind="IPv1 label"), 1)
    assert quick.job is None  # blends of the pair: no child process needed
    node = follow(quick)[-1].outcome.node
    assert node is not mine and node.GetName().startswith("uLDCT IPv1 label preview")
    np.testing.assert_array_equal(volume_from_node(mine).array, case.ndct.array)
    again = follow(logic.previewFusion(_panel(u_node, n_node, fusionKind="IPv1 label"), 2))
    assert again[-1].outcome.node is node  # reused, not piling up

    task = logic.previewFusion(_panel(u_node, n_node), 1, workdir=str(tmp_path / "p"))
    assert task.job is not None and "--only" in task.job.argv
    shown = follow(task)[-1].outcome.node
    assert shown.GetName() == "uLDCT IPv2 training input preview"
    preview = volume_from_node(shown)
    assert preview.shape == (1, 64, 64)
    expected = workflows.fusion_slice(u_node, n_node, 1, kind="ipv2-input")
    np.testing.assert_allclose(preview.array, expected.array, atol=0.01)
    np.testing.assert_allclose(preview.origin, expected.origin)  # drawn at slice 1
    # The IPv2 label needs the weak denoiser: refused before any process starts.
    with pytest.raises(IPv2Error, match="weak denoiser"):
        logic.previewFusion(_panel(u_node, n_node, fusionKind="IPv2 label"), 1)
    weak = tiny_checkpoint(tmp_path / "weak", arch="regressor")
    label = logic.previewFusion(
        _panel(u_node, n_node, fusionKind="IPv2 label", modelPath=weak),
        1,
        workdir=str(tmp_path / "l"),
    )
    assert "--weak-denoiser" in label.job.argv
    assert follow(label)[-1].outcome.node.GetName() == "uLDCT IPv2 label preview"


def test_denoise_selftest_steps_pass_on_a_real_scene(scene) -> None:  # type: ignore[no-untyped-def]
    """The in-Slicer self-test's steps, here on slicer-core's MRML (no application)."""
    from ipv2.slicer.selftest import denoise_selftest

    logic = _logic()
    p = _panel(None, modelPath=Path())
    logic.getParameterNode = lambda: p
    said: list[str] = []
    node = denoise_selftest(logic, say=said.append, keep_alive=lambda: None)
    assert node.GetName() == "phantom uLDCT IPv2 denoised" and len(said) == 3


def test_ipv2_outputs_are_marked_and_left_out_of_the_input_selectors(
    scene, case, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 (UX): the input selectors skip label maps and the module's own outputs."""
    from ipv2.slicer.own_outputs import first_input_volume, hide_outputs_from, own_output_ids

    logic = _logic()
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a label map")
    assert first_input_volume(scene) is None  # a label map is no scan
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    n_node = node_from_volume(case.ndct, "NDCT", scene)
    p = _panel(u_node, n_node, fusionKind="IPv1 label", modelPath=tiny_checkpoint(tmp_path / "m"))
    preview = follow(logic.previewFusion(p, 1))[-1].outcome.node
    volumes = follow(logic.createFusionVolumes(p, workdir=str(tmp_path / "v")))[-1].outcome.node
    denoised = follow(logic.startDenoise(p, workdir=str(tmp_path / "d")))[-1].outcome.node
    made = {preview, volumes["training_input"], volumes["evaluation_label"], denoised}
    assert set(own_output_ids(scene)) == {node.GetID() for node in made}
    assert labels.GetID() not in own_output_ids(scene)
    scene.RemoveNode(u_node)
    assert first_input_volume(scene) is n_node  # the default uLDCT is never an output

    # What qMRMLNodeComboBox.sortFilterProxyModel() returns in Slicer: a hiddenNodeIDs list.
    proxy = SimpleNamespace(hiddenNodeIDs=[])
    hide_outputs_from([SimpleNamespace(sortFilterProxyModel=lambda: proxy)], scene)
    assert sorted(proxy.hiddenNodeIDs) == sorted(own_output_ids(scene))
    # A current choice stays listed: hiding it would make Qt select another volume.
    hide_outputs_from([SimpleNamespace(sortFilterProxyModel=lambda: proxy)], scene, [denoised])
    assert denoised.GetID() not in proxy.hiddenNodeIDs and len(proxy.hiddenNodeIDs) == 3


def test_a_task_whose_loading_and_clean_up_fail_still_ends_visibly(tmp_path: Path) -> None:
    """The panel's timer must not poll an ended task forever: any failure while loading
    or discarding becomes a failure outcome with the traceback."""
    import sys

    from ipv2.runtime.jobs import Job
    from ipv2.slicer.engine_task import EngineTask

    def broken() -> None:
        raise OSError("disk gone")

    command = ["phantom", "--out", str(tmp_path / "p"), "--size", "32", "--slices", "2"]
    job = Job.engine(command, python=sys.executable).start()
    task = EngineTask("volumes", "Test", job, load=lambda: 1 / 0, discard=broken)
    outcome = follow(task)[-1].outcome
    assert outcome.failed and outcome.node is None
    assert "OSError: disk gone" in outcome.message and "ZeroDivisionError" in outcome.details
    assert task.poll().outcome is None and not task.running


def test_cancel_reaches_the_denoiser_through_its_stop_file(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Defect 1 on the denoising side: Cancel writes the stop-request file, which the
    denoiser polls between batches (no signal, which a launcher would swallow); it ends
    with a ``cancelled`` done event and nothing is written."""
    import time

    logic = _logic()
    source = node_from_volume(make_phantom(64, 24, seed=3).uldct, "uLDCT", scene)
    p = _panel(source, modelPath=tiny_checkpoint(tmp_path / "m"), steps=40, batchSize=1)
    task = logic.startDenoise(p, workdir=str(tmp_path / "w"))
    deadline = time.monotonic() + 120
    while task.job.fraction == 0 and task.job.running and time.monotonic() < deadline:
        task.job.poll()
        time.sleep(0.05)
    assert task.job.running and task.job.engine_pid is not None  # past start-up, denoising
    task.cancel()
    outcome = follow(task)[-1].outcome
    assert outcome.message == "Cancelled; nothing was written." and not outcome.failed
    result = task.job.result or {}
    assert result.get("status") == "cancelled", task.job.log_tail(10)
    # The engine stopped itself between steps (Job.stop sends no signal once the engine
    # has announced its pid): a cooperative stop, not the kill after the grace period.
    assert str(result.get("message")).startswith("sampling cancelled after"), result
    assert task.job.returncode is not None and task.job.returncode >= 0
    assert not (tmp_path / "w").exists()
