"""Static checks of the Slicer extension files (no Slicer application runs here)."""

from __future__ import annotations

import ast
import json
import py_compile
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from module_checks import check_cmake, check_ui_consistency

REPO = Path(__file__).resolve().parents[1]
MODULES = {"IPv2Denoise": "IPv2DenoiseParameterNode", "IPv2Train": "IPv2TrainParameterNode"}
PRESENT = [m for m in MODULES if (REPO / m / f"{m}.py").exists()]


def test_every_python_file_of_the_extension_compiles(tmp_path: Path) -> None:
    files = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts and "build" not in p.parts]
    assert len(files) > 20
    for path in files:
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.parametrize("module", PRESENT)
def test_module_ui_and_parameters_are_consistent(module: str) -> None:
    folder = REPO / module
    problems = check_ui_consistency(
        folder / f"{module}.py", folder / f"Resources/UI/{module}.ui", MODULES[module]
    )
    assert problems == []


@pytest.mark.parametrize("module", PRESENT)
def test_removing_a_used_widget_from_the_ui_is_caught(module: str, tmp_path: Path) -> None:
    folder = tmp_path / module
    shutil.copytree(REPO / module, folder)
    ui = folder / f"Resources/UI/{module}.ui"
    tree = ET.parse(ui)
    # Remove the widget the code uses to start the main action.
    target = "denoiseButton" if module == "IPv2Denoise" else "startButton"
    for parent in tree.getroot().iter():
        for child in list(parent):
            if child.tag == "item" and any(w.get("name") == target for w in child.iter("widget")):
                parent.remove(child)
    tree.write(ui)
    problems = check_ui_consistency(folder / f"{module}.py", ui, MODULES[module])
    assert any(target in p for p in problems)


@pytest.mark.parametrize("module", PRESENT)
def test_a_field_bound_to_the_wrong_widget_kind_is_caught(module: str, tmp_path: Path) -> None:
    folder = tmp_path / module
    shutil.copytree(REPO / module, folder)
    code = folder / f"{module}.py"
    # A path field typed str cannot drive a ctkPathLineEdit inside Slicer.
    field = "modelPath" if module == "IPv2Denoise" else "outputFolder"
    text = code.read_text().replace(f"    {field}: pathlib.Path", f'    {field}: str = ""')
    code.write_text(text)
    problems = check_ui_consistency(code, folder / f"Resources/UI/{module}.ui", MODULES[module])
    assert any(field in p and "ctkPathLineEdit" in p for p in problems)


@pytest.mark.parametrize("module", PRESENT)
def test_cmake_lists_exactly_the_module_files(module: str, tmp_path: Path) -> None:
    assert check_cmake(REPO / module) == []
    folder = tmp_path / module
    shutil.copytree(REPO / module, folder)
    (folder / "Helper.py").write_text("x = 1\n")
    (folder / f"Resources/Icons/{module}.png").unlink()
    problems = check_cmake(folder)
    assert any("Helper.py is not listed" in p for p in problems)
    assert any("missing file" in p for p in problems)


@pytest.mark.parametrize("module", PRESENT)
def test_module_file_stays_a_thin_shell(module: str) -> None:
    lines = (REPO / module / f"{module}.py").read_text().splitlines()
    assert len(lines) < 360, f"{module}.py has {len(lines)} lines; move logic into ipv2.slicer"


def test_extension_cmake_and_index_entry() -> None:
    top = (REPO / "CMakeLists.txt").read_text()
    assert "project(IPv2)" in top
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert key in top
    for sub in re.findall(r"add_subdirectory\((\w+)\)", top):
        assert (REPO / sub / "CMakeLists.txt").exists(), sub
    assert set(re.findall(r"add_subdirectory\((\w+)\)", top)) == {"ipv2", *PRESENT}
    entry = json.loads((REPO / "Resources/IPv2.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["category"] == "Filtering"
    assert "REPLACE-WITH-OWNER" in entry["scm_url"], (
        "placeholder must stay visibly marked until published"
    )
    assert "slicer-extension-catalog-entry-schema" in entry["$schema"]


def test_icons_are_128_pixels() -> None:
    import SimpleITK as sitk

    for path in [REPO / "IPv2.png", *REPO.glob("*/Resources/Icons/*.png")]:
        assert sitk.ReadImage(str(path)).GetSize() == (128, 128), path


def test_module_files_import_nothing_slicer_lacks_before_first_use() -> None:
    """The panels must load (and ask before installing) without scipy, skimage, OpenCV or torch."""
    import subprocess
    import sys

    tree = ast.parse((REPO / "IPv2Denoise/IPv2Denoise.py").read_text())
    tree_train = ast.parse((REPO / "IPv2Train/IPv2Train.py").read_text())
    modules = {  # module level, the version gate's guarded block included
        node.module
        for t in (tree, tree_train)
        for node in ast.walk(t)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("ipv2")
        and node.col_offset <= 4
    }
    assert "ipv2.slicer.denoise_logic" in modules and "ipv2.slicer.train_logic" in modules
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in sorted(modules))
        + "heavy = [m for m in ('scipy', 'skimage', 'cv2', 'torch', 'safetensors', 'tqdm', 'PIL') "
        "if m in sys.modules]\nprint(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_inspecting_a_training_source_does_not_load_torch() -> None:
    """IPv2Train inspects a source on every change (outside the dependency guard), through
    ``ipv2.data.build.discover_pairs``: that must not pull torch in (a missing torch would
    show as the source's error, and importing it blocks the GUI)."""
    import subprocess
    import sys

    code = (
        "import sys\nimport ipv2.slicer.training_plan, ipv2.data.build\n"
        "print([m for m in ('torch', 'safetensors') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# Widgets a user reads or watches rather than operates: no tooltip needed.
_PASSIVE = {"QLabel", "QWidget", "qMRMLWidget", "ctkCollapsibleButton", "QProgressBar",
            "QPlainTextEdit", "QListWidget", "QFrame", "QGroupBox"}  # fmt: skip


@pytest.mark.parametrize("module", PRESENT)
def test_every_control_has_a_tooltip(module: str) -> None:
    """Issue 13: a radiologist can hover any control to learn what it does."""
    root = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    bare = [
        w.get("name")
        for w in root.iter("widget")
        if w.get("class") not in _PASSIVE
        and not any(
            p.get("name") == "toolTip" and (p.findtext("string") or "").strip()
            for p in w.findall("property")
        )
    ]
    assert bare == [], f"controls without a tooltip in {module}.ui: {bare}"


def test_every_placeholder_is_listed_with_its_replacement() -> None:
    """Issue 13: the placeholders an ExtensionsIndex submission must replace, in one place."""
    listing = (REPO / "Resources" / "README.md").read_text()
    marked = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "CMakeLists.txt", *(REPO / "Resources").glob("*.json"))
        if "REPLACE-WITH-OWNER" in path.read_text()
    )
    assert marked, "no placeholder left: drop this test and the README table"
    for name in marked:
        assert f"`{name}`" in listing, f"{name} has a placeholder not listed in Resources/README.md"
    screenshots = re.findall(
        r"Resources/Screenshots/\S+?\.png", (REPO / "CMakeLists.txt").read_text()
    )
    assert len(screenshots) == 3, screenshots  # both panels' results
    for shot in screenshots:
        assert (REPO / shot).is_file(), f"{shot} is referenced by CMakeLists.txt but missing"


def test_the_denoise_panel_remembers_model_folders() -> None:
    """Issue 13: the model folders used before are one click away in the next session.

    ctkPathLineEdit keeps a history in QSettings under its ``settingKey`` but saves a path
    only when ``addCurrentPathToHistory()`` is called (CTK Libs/Widgets/ctkPathLineEdit.h).
    """
    root = ET.parse(REPO / "IPv2Denoise" / "Resources" / "UI" / "IPv2Denoise.ui").getroot()
    edit = next(w for w in root.iter("widget") if w.get("name") == "modelPathLineEdit")
    keys = [p.findtext("string") for p in edit.findall("property") if p.get("name") == "settingKey"]
    assert keys and keys[0], "modelPathLineEdit has no settingKey: its history is not kept"
    tree = ast.parse((REPO / "IPv2Denoise" / "IPv2Denoise.py").read_text())
    denoise = next(
        f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "onDenoise"
    )
    assert "modelPathLineEdit.addCurrentPathToHistory()" in ast.unparse(denoise)
