"""Static checks of the Slicer module files, which cannot run outside the application.

Each function returns a list of problems (empty when the files are consistent), so a
test can assert both that the real files pass and that a broken copy fails.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

# Classes a Slicer .ui may use: Qt's own widgets and layouts, CTK's, and Slicer's qMRML/qSlicer.
_QT_CLASS = re.compile(r"^(Q[A-Z]\w*|ctk[A-Z]\w*|qMRML\w+|qSlicer\w+)$")


def ui_widgets(ui_file: Path) -> dict[str, str]:
    """name -> class of every widget in a Qt Designer file."""
    root = ET.parse(ui_file).getroot()
    return {w.get("name", ""): w.get("class", "") for w in root.iter("widget")}


def used_ui_names(module_file: Path) -> set[str]:
    """Every ``self.ui.<name>`` attribute the module code reads."""
    tree = ast.parse(module_file.read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def parameter_fields(module_file: Path, class_name: str) -> dict[str, str]:
    """Annotated fields of the parameterNodeWrapper class: name -> annotation source."""
    tree = ast.parse(module_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return {
                stmt.target.id: ast.unparse(stmt.annotation)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    return {}


# Widgets Slicer's parameterNodeWrapper can connect to each kind of field (its GUI
# connectors match widget classes exactly: a str field cannot drive a ctkPathLineEdit,
# a float cannot drive a ctkDoubleSpinBox).
_CONNECTABLE = {
    "node": {"qMRMLNodeComboBox"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "bool": {"QCheckBox", "QPushButton", "ctkCheckBox"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "choice": {"QComboBox"},
    "str": {"QLineEdit", "QComboBox"},
}


def field_kind(annotation: str) -> str:
    if "vtkMRML" in annotation:
        return "node"
    if "Path" in annotation:
        return "path"
    if "Choice" in annotation:
        return "choice"
    for kind in ("bool", "int", "float", "str"):
        if re.search(rf"\b{kind}\b", annotation):
            return kind
    return "unknown"


def ui_bindings(ui_file: Path) -> dict[str, str]:
    """SlicerParameterName -> class of the widget that carries it."""
    root = ET.parse(ui_file).getroot()
    out = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                text = prop.find("string")
                if text is not None and text.text:
                    out[text.text] = widget.get("class", "")
    return out


def check_ui_consistency(module_file: Path, ui_file: Path, parameter_class: str) -> list[str]:
    problems = []
    widgets = ui_widgets(ui_file)
    for name in sorted(used_ui_names(module_file) - set(widgets)):
        problems.append(f"{module_file.name} uses self.ui.{name}, which {ui_file.name} lacks")
    for name, cls in sorted(widgets.items()):
        if not _QT_CLASS.match(cls):
            problems.append(f"{ui_file.name}: widget {name} has non-Qt/CTK/MRML class {cls!r}")
    fields = parameter_fields(module_file, parameter_class)
    for bound, cls in sorted(ui_bindings(ui_file).items()):
        if bound not in fields:
            problems.append(
                f"{ui_file.name} binds SlicerParameterName {bound!r}, not a field of {parameter_class}"
            )
            continue
        kind = field_kind(fields[bound])
        if cls not in _CONNECTABLE.get(kind, set()):
            problems.append(
                f"{parameter_class}.{bound} ({fields[bound]}) cannot be connected to a {cls}"
            )
    return problems


def cmake_listed_files(cmake_file: Path) -> list[Path]:
    """Files named in MODULE_PYTHON_SCRIPTS / MODULE_PYTHON_RESOURCES, resolved."""
    text = cmake_file.read_text()
    module = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text)
    name = module.group(1) if module else ""
    files = []
    for block in re.findall(r"set\(MODULE_PYTHON_(?:SCRIPTS|RESOURCES)\s+(.*?)\)", text, re.S):
        for token in block.split():
            files.append(cmake_file.parent / token.replace("${MODULE_NAME}", name))
    return files


def check_cmake(module_dir: Path) -> list[str]:
    """Every listed file exists; every .py, .ui and icon of the module is listed."""
    cmake = module_dir / "CMakeLists.txt"
    listed = cmake_listed_files(cmake)
    problems = [
        f"{cmake} lists missing file {p.relative_to(module_dir)}" for p in listed if not p.exists()
    ]
    present = [
        *module_dir.glob("*.py"),
        *module_dir.glob("Resources/UI/*.ui"),
        *module_dir.glob("Resources/Icons/*.png"),
    ]
    for path in present:
        if path not in listed:
            problems.append(f"{path.relative_to(module_dir)} is not listed in {cmake}")
    return problems
