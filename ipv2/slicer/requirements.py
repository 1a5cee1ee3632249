"""Which of the engine's Python packages an environment lacks, and how to add them safely.

Inside Slicer the engine must be completed on first use, after the user agrees, without
ever replacing what Slicer itself ships (numpy, SimpleITK, VTK): a pip resolver that
"helpfully" upgrades Slicer's numpy can break the application. This module decides what
is missing and builds pip arguments that pin the protected packages; the Slicer side
(:func:`ipv2.slicer.install_dependencies`) only runs them. Nothing here imports Slicer.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Packages Slicer ships and that must stay exactly as they are.
PROTECTED = ("numpy", "SimpleITK", "vtk")
TORCH_SPEC = ">=2.1,<3"


@dataclass(frozen=True)
class Requirement:
    """A distribution the engine needs, with its minimum version.

    ``alternatives`` are other distributions of the same import (OpenCV ships as four):
    any of them at the minimum version satisfies the requirement, so an OpenCV that
    another Slicer extension installed is used instead of being overwritten.
    """

    name: str
    minimum: str
    alternatives: tuple[str, ...] = ()

    @property
    def pip(self) -> str:
        return f"{self.name}>={self.minimum}"


# The runtime dependencies of pyproject.toml that Slicer does not provide.
ENGINE_REQUIREMENTS = (
    Requirement("scipy", "1.10"),
    Requirement("scikit-image", "0.21"),
    Requirement(
        "opencv-python-headless",
        "4.8",
        alternatives=("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
    ),
    Requirement("safetensors", "0.4"),
    Requirement("tqdm", "4.60"),
    Requirement("pillow", "9"),
)

VersionLookup = Callable[[str], str]


def _installed(name: str, version_of: VersionLookup) -> str | None:
    try:
        return version_of(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _as_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def torch_version_problem(version: str) -> str | None:
    """Why an installed torch cannot run the engine (None when it can).

    Presence is not enough: another extension may have installed an older torch, and the
    engine's models then fail in ways that name no version. IPv2 does not replace it by
    itself (that extension may need it, and a loaded torch is only replaced on restart).
    """
    have = _as_tuple(version)
    low, high = (2, 1), (3,)
    if have and low <= have < high:
        return None
    return (
        f"IPv2 needs torch{TORCH_SPEC}, but this Slicer has torch {version}. Install a "
        f"suitable version with the PyTorch Utils module (PyTorch extension), e.g. version "
        f"requirement '{TORCH_SPEC}', then restart Slicer."
    )


def missing(
    requirements: Iterable[Requirement] = ENGINE_REQUIREMENTS,
    version_of: VersionLookup = importlib.metadata.version,
) -> list[Requirement]:
    """Requirements that are absent or older than their minimum."""
    out = []
    for req in requirements:
        versions = (_installed(name, version_of) for name in (req.name, *req.alternatives))
        if not any(v is not None and _as_tuple(v) >= _as_tuple(req.minimum) for v in versions):
            out.append(req)
    return out


def protected_pins(version_of: VersionLookup = importlib.metadata.version) -> list[str]:
    """``name==version`` for every protected package present, for a pip constraints file."""
    pins = []
    for name in PROTECTED:
        have = _installed(name, version_of)
        if have is not None:
            pins.append(f"{name}=={have}")
    return pins


def pip_arguments(requirements: Iterable[Requirement], constraints_file: str) -> list[str]:
    """Arguments for ``pip install`` that add ``requirements`` and keep protected pins."""
    return [*(r.pip for r in requirements), "--constraint", constraints_file]


def confirmation_text(requirements: Iterable[Requirement], torch_needed: bool) -> str:
    """What the user is asked before anything is installed."""
    lines = [f"  - {r.pip}" for r in requirements]
    if torch_needed:
        lines.insert(
            0,
            f"  - torch{TORCH_SPEC} (through the PyTorch extension; a CUDA build when a GPU driver is found)",
        )
    return (
        "IPv2 needs these Python packages, which are not installed yet:\n"
        + "\n".join(lines)
        + "\n\nSlicer's own numpy, SimpleITK and VTK are kept as they are. Install now? "
        "This downloads packages from the Python Package Index and may take a few minutes."
    )


def failure_hint(pip_output: str) -> str:
    """A next step for the usual reasons a pip install fails."""
    text = pip_output.lower()
    if any(
        s in text for s in ("connection", "timed out", "name resolution", "network is unreachable")
    ):
        return (
            "The Python Package Index could not be reached. If this computer is offline, "
            "install the packages on a connected machine with 'pip download' and install "
            "the files with Slicer's Python; behind a proxy, set HTTPS_PROXY before starting "
            "Slicer."
        )
    if "ssl" in text or "certificate" in text:
        return (
            "A secure connection could not be made (certificate problem), often caused by a "
            "corporate proxy: ask IT for its certificate bundle and set PIP_CERT to it."
        )
    if "no matching distribution" in text or "could not find a version" in text:
        return (
            "No compatible package was found for this Slicer's Python version; update Slicer "
            "to 5.10 or newer."
        )
    if "permission" in text or "access is denied" in text:
        return "Slicer's folder is not writable: run Slicer as a user who may install packages."
    return "See the pip output above; the IPv2 README lists the packages for a manual install."
