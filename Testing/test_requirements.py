"""Dependency decisions for Slicer: what is missing, and protected packages stay pinned."""

from __future__ import annotations

import importlib.metadata

import pytest

from ipv2.slicer.requirements import (
    ENGINE_REQUIREMENTS,
    Requirement,
    confirmation_text,
    failure_hint,
    missing,
    pip_arguments,
    protected_pins,
)


def _lookup(versions: dict[str, str]):  # type: ignore[no-untyped-def]
    def version_of(name: str) -> str:
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    return version_of


def test_absent_and_too_old_packages_are_missing() -> None:
    reqs = [
        Requirement("scipy", "1.10"),
        Requirement("tqdm", "4.60"),
        Requirement("safetensors", "0.4"),
    ]
    found = missing(reqs, _lookup({"scipy": "1.9.3", "tqdm": "4.66.1"}))
    assert [r.name for r in found] == ["scipy", "safetensors"]


def test_another_opencv_distribution_satisfies_the_requirement() -> None:
    """An OpenCV another extension installed is used, not overwritten by a second copy."""
    opencv = next(r for r in ENGINE_REQUIREMENTS if r.name == "opencv-python-headless")
    assert missing([opencv], _lookup({"opencv-contrib-python": "4.10.0.84"})) == []
    assert missing([opencv], _lookup({"opencv-python": "4.5.1"})) == [opencv]  # too old
    assert missing([opencv], _lookup({})) == [opencv]


def test_prerelease_and_local_versions_compare_sanely() -> None:
    reqs = [Requirement("scipy", "1.10")]
    assert missing(reqs, _lookup({"scipy": "1.10.0rc1"})) == []
    assert missing(reqs, _lookup({"scipy": "1.11.0+local"})) == []


def test_this_environment_has_everything() -> None:
    assert missing(ENGINE_REQUIREMENTS) == []


def test_protected_packages_are_pinned_not_installed() -> None:
    pins = protected_pins(_lookup({"numpy": "1.26.4", "SimpleITK": "2.3.1"}))
    assert pins == ["numpy==1.26.4", "SimpleITK==2.3.1"]
    args = pip_arguments([Requirement("scikit-image", "0.21")], "/tmp/c.txt")
    assert args == ["scikit-image>=0.21", "--constraint", "/tmp/c.txt"]
    assert not any(a.startswith(("numpy", "SimpleITK", "vtk")) for a in args)


def test_confirmation_lists_packages_and_reassures_about_slicer() -> None:
    text = confirmation_text([Requirement("scipy", "1.10")], torch_needed=True)
    assert "scipy>=1.10" in text and "torch" in text
    assert "numpy, SimpleITK and VTK are kept" in text


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("ERROR: Could not install: Connection timed out", "offline"),
        ("SSL: CERTIFICATE_VERIFY_FAILED", "certificate"),
        ("ERROR: No matching distribution found for safetensors>=0.4", "Slicer"),
        ("PermissionError: [Errno 13] Permission denied", "writable"),
        ("something else", "README"),
    ],
)
def test_failure_hints(output: str, expected: str) -> None:
    assert expected in failure_hint(output)


def test_engine_requirements_match_pyproject() -> None:
    """What Slicer is offered to install is pyproject's runtime list minus Slicer's own."""
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    names = {
        d.split(">")[0].split("<")[0].split("=")[0].strip().lower()
        for d in project["project"]["dependencies"]
    }
    offered = {r.name.lower() for r in ENGINE_REQUIREMENTS}
    assert offered == names - {"numpy", "simpleitk", "torch"}
