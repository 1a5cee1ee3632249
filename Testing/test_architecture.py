"""The engine's import rule: stages form a stack, and imports only ever point down it.

docs/architecture.md states the rule and lists the stages in this order; these tests
parse every import statement of the engine (module level, inside functions and under
``TYPE_CHECKING`` alike) and fail on any import of a higher stage or any import cycle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "ipv2"

# Lowest first. A module may import its own stage and any stage listed before it.
STAGES: tuple[str, ...] = (
    "core",
    "runtime",
    "models",
    "schemes",
    "io",
    "simulation",
    "purification",
    "inference",
    "metrics",
    "data",
    "training",
    "phantom",
    "demo",
    "slicer",
    "benchmarks",
    "cli",
)
# The package root holds only the version; ``python -m ipv2`` enters through the CLI.
ROOT_MODULES = {"ipv2": -1, "ipv2.__main__": len(STAGES)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_sources() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in sorted(ENGINE.rglob("*.py"))}


def imported_modules(module: str, source: str, is_package: bool) -> set[str]:
    """Every ``ipv2`` module this source imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ipv2")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "ipv2":
                continue
            found.add(target)
            # ``from ipv2.x import y`` may name a submodule y: count it as imported too.
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def rank(module: str) -> int:
    if module in ROOT_MODULES:
        return ROOT_MODULES[module]
    stage = module.split(".")[1]
    if stage not in STAGES:
        raise AssertionError(f"{module} lies in no stage; add its folder to STAGES and the docs")
    return STAGES.index(stage)


def import_graph(sources: Mapping[str, str], packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the engine modules it imports (names that are not modules are dropped)."""
    pkgs = set(packages)
    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        targets = imported_modules(module, source, module in pkgs)
        graph[module] = {t for t in targets if t in sources and t != module}
    return graph


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Each import of a higher stage, as 'importer -> imported (stage order)'."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if rank(target) > rank(module):
                bad.append(f"{module} -> {target}")
    return bad


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def engine_graph() -> dict[str, set[str]]:
    packages = {module_name(p) for p in ENGINE.rglob("__init__.py")}
    return import_graph(engine_sources(), packages)


def test_every_engine_folder_is_a_stage() -> None:
    folders = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(STAGES), f"folders without a stage: {folders - set(STAGES)}"
    loose = {p.name for p in ENGINE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside any stage folder: {sorted(loose)}"


def test_imports_point_down_the_stack() -> None:
    bad = upward_imports(engine_graph())
    assert not bad, "imports of a higher stage:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(engine_graph())
    assert not found, f"modules that import each other: {found}"


def test_an_inverted_import_is_caught() -> None:
    """The rule has teeth: core importing training, or a two-module cycle, is reported."""
    sources = engine_sources()
    sources["ipv2.core.volume"] += "\nfrom ipv2.training.loop import train\n"
    sources["ipv2.io.volumes"] += "\nfrom ..core import hu_window as _w\n"
    sources["ipv2.core.hu_window"] += "\nimport ipv2.io.volumes\n"
    packages = {module_name(p) for p in ENGINE.rglob("__init__.py")}
    graph = import_graph(sources, packages)
    bad = upward_imports(graph)
    assert "ipv2.core.volume -> ipv2.training.loop" in bad
    assert "ipv2.core.hu_window -> ipv2.io.volumes" in bad
    assert any({"ipv2.core.hu_window", "ipv2.io.volumes"} <= set(c) for c in cycles(graph))


def test_architecture_doc_lists_the_stages_in_order() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.findall(r"^  (\w+)/ ", doc, flags=re.MULTILINE)
    assert listed == list(STAGES), f"docs/architecture.md lists {listed}"


@pytest.mark.parametrize("folder", ["IPv2Denoise", "IPv2Train"])
def test_module_files_reach_the_engine_only_through_slicer_and_lower(folder: str) -> None:
    """The panels use the engine's Slicer adapter, never the CLI or the benchmarks."""
    source = (ROOT / folder / f"{folder}.py").read_text(encoding="utf-8")
    used = {m.split(".")[1] for m in imported_modules(folder, source, False) if "." in m}
    assert used <= set(STAGES[: STAGES.index("slicer") + 1]), sorted(used)


# Third-party calls whose APIs take their arguments positionally (SimpleITK's and VTK's
# wrapped C++ functions accept no keywords; nn.Sequential takes its layers as *args).
FOREIGN_CALLS = {"sitk.Resample", "cv2.copyMakeBorder", "nn.Sequential", "image.SetExtent"}


def _top_level_functions(tree: ast.Module) -> list[tuple[ast.FunctionDef, bool]]:
    found: list[tuple[ast.FunctionDef, bool]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append((node, False))
        elif isinstance(node, ast.ClassDef):
            found += [(n, True) for n in node.body if isinstance(n, ast.FunctionDef)]
    return found


def test_public_functions_take_at_most_three_positional_parameters() -> None:
    """Past three, parameters are keyword-only: calls then say what each value is."""
    bad = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn, is_method in _top_level_functions(tree):
            if fn.name.startswith("_") or fn.args.vararg is not None:
                continue
            positional = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            static = any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list
            )
            if is_method and not static and positional[:1] in (["self"], ["cls"]):
                positional = positional[1:]
            if len(positional) > 3:
                bad.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}{tuple(positional)}")
    assert not bad, "add '*' after the third parameter:\n" + "\n".join(bad)


def test_no_call_passes_more_than_four_positional_arguments() -> None:
    bad = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or ast.unparse(node.func) in FOREIGN_CALLS:
                continue
            if sum(not isinstance(a, ast.Starred) for a in node.args) > 4:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
    assert not bad, "name the arguments of:\n" + "\n".join(bad)
