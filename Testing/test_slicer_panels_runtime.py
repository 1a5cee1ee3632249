"""What breaks in the real Slicer application, checked outside it (issue 13, defects 2-9).

Each test targets one numbered defect. Where the defect lives in the application the test
drives the Qt-free part the panel now delegates to (real MRML from the slicer-core wheel,
real pip and Python subprocesses), or checks the module files' wiring with ``ast``.
Slicer behaviour relied on is cited from Slicer's sources (tags v5.8.0 / v5.10.0).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DENOISE = REPO / "IPv2Denoise/IPv2Denoise.py"
TRAIN = REPO / "IPv2Train/IPv2Train.py"
SELECTOR = REPO / "IPv2Denoise/IPv2DenoiseLib/model_selector.py"
MODULES = {DENOISE: "IPv2DenoiseParameterNode", TRAIN: "IPv2TrainParameterNode"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _method(path: Path, cls: str, name: str) -> ast.FunctionDef:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{path.name}: {cls}.{name} not found")


def _calls(node: ast.AST) -> set[str]:
    """Dotted names of every call inside ``node`` (e.g. 'self.preview.detach')."""
    return {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )


# -- 2. "Use scene pairs": a Path field takes only a Path --------------------------------


def _path_fields(path: Path) -> set[str]:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ClassDef) and node.name == MODULES.get(path):
            return {
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign)
                and isinstance(s.target, ast.Name)
                and "Path" in ast.unparse(s.annotation)
            }
    return set()


def test_path_fields_are_only_assigned_paths() -> None:
    """Slicer's PathSerializer validates ``IsInstance(pathlib.Path)`` and raises TypeError for
    a str (v5.10.0 Base/Python/slicer/parameterNodeWrapper/serializers.py, validators.py):
    every assignment to a Path field in the module files must build a ``pathlib.Path``."""
    fields = _path_fields(DENOISE) | _path_fields(TRAIN)
    assert {"modelPath", "dataSource", "datasetFolder", "outputFolder"} <= fields
    bad = []
    for path in (DENOISE, TRAIN, SELECTOR):
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs = (
                    zip(target.elts, node.value.elts, strict=True)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [(target, node.value)]
                )
                for t, v in pairs:
                    if isinstance(t, ast.Attribute) and t.attr in fields:
                        ok = isinstance(v, ast.Call) and ast.unparse(v.func) in (
                            "pathlib.Path",
                            "Path",
                        )
                        if not ok:
                            bad.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert bad == []


# -- 3. unset paths are unset everywhere ------------------------------------------------


def test_optional_path_treats_dot_and_empty_as_unset() -> None:
    from ipv2.slicer.paths import optional_path, path_text

    for unset in (None, "", " ", ".", Path()):
        assert optional_path(unset) is None and path_text(unset) == ""
    assert optional_path("/data/pairs.csv") == Path("/data/pairs.csv")
    assert path_text(Path("models/a")) == str(Path("models/a"))


def test_unset_source_and_model_are_not_inspected() -> None:
    """The connector writes the unset "." into the path fields during setup: neither panel
    may read the working folder, nor import scikit-image or torch to do so."""
    out = _run(
        "import sys\n"
        "from ipv2.slicer.train_logic import TrainLogicMixin as T\n"
        "from ipv2.slicer.denoise_logic import DenoiseLogicMixin as D\n"
        "print(T.inspectSource('.').warnings)\n"
        "print(D.describeModel('.'))\n"
        "print(sorted(m for m in ('skimage', 'scipy', 'torch', 'cv2') if m in sys.modules))\n"
    )
    assert out.returncode == 0, out.stderr
    source, model, heavy = out.stdout.strip().splitlines()
    assert source == "['choose a source']"
    assert model == "No model selected."
    assert heavy == "[]"


def test_a_model_card_needs_no_torch(tmp_path: Path) -> None:
    """Defect 3's second half: before the first install torch is missing; the model card
    of a real model folder is read from its JSON alone then, no ImportError escapes."""
    from factories import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "m")
    out = _run(
        "import sys\n"
        "sys.modules['torch'] = None  # a Slicer without torch yet: import torch fails\n"
        "from ipv2.slicer.denoise_logic import DenoiseLogicMixin as D\n"
        f"print(D.describeModel({str(model)!r}))\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Model:        ffm network") and "SHA-256" in out.stdout


# -- 4. the compare layout is three axial views --------------------------------------------


@pytest.fixture()
def app_scene(scene):  # type: ignore[no-untyped-def]
    """A scene as the application prepares it: orientation presets and the layout logic,
    which creates Red (axial), Yellow (sagittal) and Green (coronal) at start-up
    (v5.10.0 Libs/MRML/Logic/vtkMRMLApplicationLogic.cxx adds the presets)."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    logic = slicer.vtkMRMLLayoutLogic()
    logic.SetMRMLScene(scene)
    logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    yield scene
    logic.SetMRMLScene(None)


def _orientations(scene: Any) -> dict[str, str]:
    return {
        tag: scene.GetSingletonNode(tag, "vtkMRMLSliceNode").GetOrientation()
        for tag in ("Red", "Yellow", "Green")
    }


def test_layout_xml_alone_leaves_existing_views_as_they_were(app_scene) -> None:  # type: ignore[no-untyped-def]
    """Why the XML is not enough: ``action="default"`` applies to new views only
    (v5.10.0 Libs/MRML/Logic/vtkMRMLLayoutLogic.cxx, CreateMissingViews/ApplyProperties)."""
    from ipv2.slicer.layout import register_compare_layout

    assert _orientations(app_scene) == {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
    layout = app_scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(register_compare_layout(app_scene))
    assert _orientations(app_scene)["Yellow"] == "Sagittal"


def test_compare_layout_makes_all_three_views_axial(app_scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.layout import COMPARE_LAYOUT_ID, show_compare_layout

    assert len(show_compare_layout(app_scene)) == 3
    assert app_scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == (
        COMPARE_LAYOUT_ID
    )
    assert _orientations(app_scene) == {"Red": "Axial", "Yellow": "Axial", "Green": "Axial"}
    assert "show_compare_layout" in _calls(_method(DENOISE, "IPv2DenoiseLogic", "showCompare"))
    # A finished task is shown beside the pair it started from (EngineTask.sources), never
    # beside the selection at its end (Testing/test_engine_tasks.py records the pair).
    for cls, name in (("IPv2DenoiseWidget", "onPollTask"), ("IPv2DenoiseLogic", "showCompare")):
        code = ast.unparse(_method(DENOISE, cls, name))
        assert "uldctVolume" not in code and "ndctVolume" not in code
    assert "task.sources" in ast.unparse(_method(DENOISE, "IPv2DenoiseWidget", "onPollTask"))


# -- 5. the live preview: observed from enter() to exit(), its own segmentation ------------


def test_preview_observer_lives_from_attach_to_detach(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.preview import LivePreview

    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    calls: list[int] = []
    preview = LivePreview(lambda: True)
    preview.attach(red, lambda: calls.append(1))
    preview.attach(red, lambda: calls.append(1))  # entering twice: still one observer
    red.Modified()
    assert calls == [1] and preview.attached
    preview.detach()
    red.Modified()
    assert calls == [1] and not preview.attached
    preview.attach(None, lambda: calls.append(1))  # no Red view (no main window): no error
    assert not preview.attached


def test_module_observes_the_slice_only_while_entered() -> None:
    """Slicer's template: observers in enter(), removed in exit() and cleanup()
    (v5.10.0 Utilities/Templates/Modules/Scripted/TemplateKey.py)."""
    setup = _method(DENOISE, "IPv2DenoiseWidget", "setup")
    assert not any("layoutManager" in c for c in _calls(setup))
    assert not any(
        ast.unparse(n).startswith("self.addObserver(red")
        for n in ast.walk(setup)
        if isinstance(n, ast.Call)
    )
    assert "self.preview.attach" in _calls(_method(DENOISE, "IPv2DenoiseWidget", "enter"))
    assert "self.preview.detach" in _calls(_method(DENOISE, "IPv2DenoiseWidget", "exit"))
    assert "self.preview.detach" in _calls(_method(DENOISE, "IPv2DenoiseWidget", "cleanup"))


def test_scrolling_the_preview_keeps_the_whole_volume_masks(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.phantom import make_phantom
    from ipv2.slicer import node_from_volume, segment_array
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin
    from ipv2.slicer.preview import LivePreview

    case = make_phantom(size=64, slices=4, seed=5)
    u = node_from_volume(case.uldct, "u", scene)
    p = SimpleNamespace(
        uldctVolume=u,
        ndctVolume=None,
        maskVariant="paper",
        useFixedThreshold=False,
        fixedThreshold=-400.0,
        openingRadius=1,
    )
    logic = DenoiseLogicMixin()
    whole = logic.wholeVolumeMasks(p)
    before = segment_array(whole, "lung", u)
    assert before[[0, 3]].any()
    preview = LivePreview(lambda: True)
    assert preview.update(p, 1, logic=logic).startswith("Slice 1:")
    assert preview.update(p, 2, logic=logic).startswith("Slice 2:")
    own = preview.segmentation(u)
    assert own is not whole and own.GetName() == "u IPv2 preview masks"
    assert (segment_array(whole, "lung", u) == before).all()
    assert not segment_array(own, "lung", u)[[0, 1, 3]].any()  # the last previewed slice only


# -- 6. the preview checks the dependencies first -----------------------------------------


def test_preview_asks_for_missing_packages_once_before_computing() -> None:
    from ipv2.slicer.dependencies import install_dependencies
    from ipv2.slicer.preview import LivePreview
    from ipv2.slicer.requirements import Requirement

    asked: list[str] = []
    absent = [Requirement("ipv2-test-absent-package", "1.0")]

    def ensure() -> bool:
        return install_dependencies(lambda text: asked.append(text) or False, absent)

    class NoCompute:
        def previewSlice(self, *args: Any) -> Any:
            raise AssertionError("computed a preview without the dependencies")

    preview = LivePreview(ensure)
    p = SimpleNamespace(uldctVolume=None)
    for _ in range(3):  # every scroll: paused, but the question is asked only once
        assert preview.update(p, 0, logic=NoCompute()).startswith("Live preview paused")
    assert len(asked) == 1 and "ipv2-test-absent-package" in asked[0]
    preview.resume()  # entering the module again asks again
    preview.update(p, 0, logic=NoCompute())
    assert len(asked) == 2
    setup = _method(DENOISE, "IPv2DenoiseWidget", "setup")
    assert "LivePreview" in _calls(setup)
    assert "self.checkDependencies" in {
        ast.unparse(a) for c in ast.walk(setup) if isinstance(c, ast.Call) for a in c.args
    }


# -- 7. install errors reach the user with pip's output -----------------------------------


def _failing_pip(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-index", "ipv2-test-absent-package"]


def test_run_pip_keeps_pips_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer.dependencies import install_dependencies, run_pip
    from ipv2.slicer.requirements import Requirement

    lines: list[str] = []
    with pytest.raises(subprocess.CalledProcessError) as err:
        run_pip(["--no-index", "ipv2-test-absent-package"], on_line=lines.append)
    assert "No matching distribution" in err.value.output
    assert any("ipv2-test-absent-package" in line for line in lines)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip reads it: no network in this test
    with pytest.raises(IPv2Error) as failed:
        install_dependencies(
            lambda text: True,
            [Requirement("ipv2-test-absent-package", "1.0")],
            torch_available=True,
        )
    text = str(failed.value)
    assert "No matching distribution" in text and "TextIOWrapper" not in text
    assert "update Slicer" in text  # the hint for "no matching distribution"


def _slicer_style_failure(command: list[str]) -> subprocess.CalledProcessError:
    """A failure exactly as ``slicer.util.logProcessOutput`` raises it: the pipe, already
    read to the end, as ``output`` (v5.8.0 and v5.10.0 Base/Python/slicer/util.py)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for _line in proc.stdout:
        pass
    proc.wait()
    return subprocess.CalledProcessError(
        proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
    )


def test_a_failing_torch_install_becomes_one_readable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PyTorch extension installs through ``slicer.util.pip_install``; its failure must
    not escape as a console traceback nor show ``<_io.TextIOWrapper ...>``."""
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer.dependencies import install_dependencies

    command = _failing_pip(tmp_path)
    (tmp_path / "PyTorchUtils.py").write_text(
        "import subprocess\n"
        "class PyTorchUtilsLogic:\n"
        "    def installTorch(self, askConfirmation, torchVersionRequirement):\n"
        f"        proc = subprocess.Popen({command!r}, stdout=subprocess.PIPE,\n"
        "                                stderr=subprocess.STDOUT, text=True)\n"
        "        for _ in proc.stdout:\n"
        "            pass\n"
        "        proc.wait()\n"
        "        raise subprocess.CalledProcessError(proc.returncode, proc.args, output=proc.stdout)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(IPv2Error) as err:
        install_dependencies(lambda text: True, [], torch_available=False)
    text = str(err.value)
    assert text.startswith("installing torch") and "TextIOWrapper" not in text
    assert "Python Console" in text  # where Slicer printed pip's lines
    assert "offline or behind a proxy" in text and "HTTPS_PROXY" in text


def test_panel_actions_show_one_dialog_with_the_details() -> None:
    from ipv2.slicer.panel_actions import failure_report, panel_action

    exc = _slicer_style_failure(_failing_pip(Path()))
    message, details = failure_report("Could not start.", exc)
    assert "TextIOWrapper" not in message + details and "CalledProcessError" in details

    class Widget:
        def __init__(self, deps: bool) -> None:
            self.deps, self.shown, self.ran = deps, [], []  # type: ignore[var-annotated]

        def ensureDependencies(self) -> bool:
            return self.deps

        def busy(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

        def showError(self, text: str, details: str) -> None:
            self.shown.append((text, details))

        @panel_action("Could not start training.", dependencies=True)
        def onStart(self) -> None:
            self.ran.append(True)
            raise subprocess.CalledProcessError(1, ["pip"], output="ERROR: Connection timed out")

    w = Widget(deps=True)
    assert w.onStart(True) is None  # clicked(bool)'s argument is dropped, nothing raises
    assert w.ran == [True] and len(w.shown) == 1
    text, details = w.shown[0]
    assert text.startswith("Could not start training.") and "Connection timed out" in details
    declined = Widget(deps=False)
    declined.onStart()
    assert declined.ran == [] and declined.shown == []


@pytest.mark.parametrize("path", [DENOISE, TRAIN])
def test_every_button_handler_reports_its_errors(path: Path) -> None:
    """Each slot a button starts is a panel_action (errors in a dialog, none on the console);
    only slots that cannot fail on user input are exempt."""
    exempt = {
        "onCancel",
        "onStop",
        "onAddPair",
    }  # flags and list entries; Stop/Kill: issue 13 item 1
    tree = _tree(path)
    decorated = {
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and any("panel_action" in ast.unparse(d) for d in f.decorator_list)
    }
    slots = set()
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and ast.unparse(call.func).endswith(".connect")):
            continue
        if call.args and "clicked" in ast.unparse(call.args[0]):
            names = {n.attr for n in ast.walk(call.args[1]) if isinstance(n, ast.Attribute)}
            slots |= {name for name in names if name.startswith("on")}
    assert slots and slots - exempt <= decorated, sorted(slots - exempt - decorated)
    assert "tryWithErrorDisplay" not in path.read_text()  # it re-raises onto the console


def test_closing_the_scene_or_the_module_ends_the_running_task() -> None:
    """Issue 13, item 10: scene close and cleanup end the panel's task through
    EngineTask.close (killed and discarded, never a failure dialog: the behaviour is
    tested with real jobs in test_engine_tasks.py); the module only has to call it."""
    for method in ("onSceneStartClose", "cleanup"):
        calls = {
            ast.unparse(n.func)
            for n in ast.walk(_method(DENOISE, "IPv2DenoiseWidget", method))
            if isinstance(n, ast.Call)
        }
        assert "self.closeTask" in calls, method
    close_task = _method(DENOISE, "IPv2DenoiseWidget", "closeTask")
    assert "self._task.close()" in ast.unparse(close_task)


# -- 8. build-server self-tests ----------------------------------------------------------


def test_selftests_skip_with_a_reason_unless_asked_to_install() -> None:
    from ipv2.slicer.requirements import Requirement
    from ipv2.slicer.selftest_gate import INSTALL_FLAG, selftest_skip_reason

    absent = [Requirement("ipv2-test-absent-package", "1.0")]
    reason = selftest_skip_reason(environ={}, requirements=absent, torch_available=False)
    assert reason is not None and "ipv2-test-absent-package" in reason and "torch" in reason
    assert INSTALL_FLAG in reason
    installed: list[bool] = []
    assert (
        selftest_skip_reason(
            environ={INSTALL_FLAG: "1"},
            requirements=absent,
            torch_available=True,
            install=lambda: installed.append(True),
        )
        is None
    )
    assert installed == [True]
    assert selftest_skip_reason(environ={}, requirements=[], torch_available=True) is None


@pytest.mark.parametrize("path", [DENOISE, TRAIN])
def test_module_setup_and_selftest_need_no_main_window(path: Path) -> None:
    cls = path.stem
    assert not any("layoutManager" in c for c in _calls(_method(path, f"{cls}Widget", "setup")))
    run = _method(path, f"{cls}Test", "runTest")
    assert {"selftest_skip_reason", "self.skipTest"} <= _calls(run)


# -- 9. a version gate instead of an import traceback on Slicer 5.8 -----------------------


def test_version_gate_message() -> None:
    from ipv2.slicer.version_gate import unsupported_reason

    assert unsupported_reason() is None
    message = unsupported_reason((3, 9, 18))
    assert message is not None and "5.10" in message and "3.9.18" in message
    assert unsupported_reason((3, 12, 0)) is None


def test_the_unsupported_panel_shows_the_message_alone() -> None:
    """What a Slicer 5.8 user sees, built the way the module files build it (Slicer's
    widget base and qt stood in by plain classes: neither exists outside Slicer)."""
    from ipv2.slicer.version_gate import message_panel

    class Layout:
        def __init__(self) -> None:
            self.widgets: list[object] = []

        def addWidget(self, widget: object) -> None:
            self.widgets.append(widget)

    class Base:
        def setup(self) -> None:
            self.layout = Layout()

    class Label:
        def __init__(self, text: str) -> None:
            self.text, self.wordWrap = text, False

    panel = message_panel(Base, SimpleNamespace(QLabel=Label), "needs Slicer 5.10")()
    panel.setup()
    [label] = panel.layout.widgets
    assert label.text == "needs Slicer 5.10" and label.wordWrap


@pytest.mark.parametrize("path", [DENOISE, TRAIN])
def test_module_files_parse_as_python_39_and_gate_the_engine(path: Path) -> None:
    ast.parse(path.read_text(), feature_version=(3, 9))
    tree = _tree(path)
    top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
    engine = [m for m in top if m.startswith(("ipv2", "IPv2"))]
    assert engine == ["ipv2.slicer.version_gate"], engine  # all else under the gate
    gates = [n for n in tree.body if isinstance(n, ast.If) and "UNSUPPORTED" in ast.unparse(n.test)]
    assert gates, "no 'if UNSUPPORTED' block"


def test_the_gate_imports_under_python_39() -> None:
    """Run what a Slicer 5.8 module file imports first with a real 3.9 interpreter."""
    candidates = [
        *(str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))),
        *filter(None, [shutil.which("python3.9")]),
    ]
    python39 = next((c for c in candidates if _runs(c)), None)
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter here; the ast check above still ran")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from ipv2.slicer.version_gate import unsupported_reason\n"
        "from ipv2.slicer.paths import optional_path\n"
        "print(unsupported_reason())\n"
    )
    out = subprocess.run([python39, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "needs 3D Slicer 5.10" in out.stdout


def _runs(python: str) -> bool:
    """A pyenv shim exists for every version but runs only the selected ones."""
    check = subprocess.run([python, "--version"], capture_output=True, text=True, timeout=30)
    return check.returncode == 0 and check.stdout.startswith("Python 3.9")


def test_an_unsuitable_torch_is_named_before_anything_is_installed() -> None:
    """Issue 13 (dependency checks): a torch version check, not only presence."""
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer.dependencies import install_dependencies
    from ipv2.slicer.requirements import torch_version_problem

    assert torch_version_problem("2.13.0+cpu") is None and torch_version_problem("2.1.0") is None
    for old_or_new in ("1.13.1", "2.0.1+cu117", "3.0.0"):
        problem = torch_version_problem(old_or_new)
        assert problem is not None and old_or_new in problem and "restart Slicer" in problem
    asked: list[str] = []
    with pytest.raises(IPv2Error, match=r"this Slicer has torch 1\.13\.1"):
        install_dependencies(asked.append, [], torch_available=True, torch_version="1.13.1")
    assert asked == []  # refused before any question or install
    # Denoising and the weak denoiser check the installed torch itself (masks and IPv1
    # fusions need none, so another extension's old torch does not block them).
    from ipv2.slicer.dependencies import check_torch_version

    with pytest.raises(IPv2Error, match="PyTorch Utils"):
        check_torch_version("2.0.1")
    check_torch_version()  # this machine's torch 2.x passes
    assert install_dependencies(asked.append, []) is True
