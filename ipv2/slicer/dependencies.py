"""Completing the engine's Python packages inside Slicer, on first use only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any


def pip_python() -> str:
    """The interpreter Slicer's own ``pip_install`` runs pip with: ``PythonSlicer`` on PATH
    inside the application (Slicer v5.10.0 Base/Python/slicer/util.py,
    ``_executePythonModule``), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def run_pip(
    args: Sequence[str],
    *,
    python: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """``python -m pip install ARGS`` with its output captured; the output on success.

    Slicer's ``slicer.util.pip_install`` prints pip's output to the console and raises
    ``CalledProcessError`` carrying the exhausted pipe instead of the text, so the user
    never sees why an install failed. Here every line is kept (and handed to ``on_line``,
    which the panel uses to keep the GUI painting) and a failure raises
    ``CalledProcessError`` whose ``output`` is pip's full text. No console window opens
    on Windows.
    """
    command = [python or pip_python(), "-m", "pip", "install", *args]
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
    lines: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        creationflags=flags,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip())
        returncode = proc.wait()
    output = "".join(lines)
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command, output=output)
    return output


def install_dependencies(
    confirm: Callable[[str], bool],
    requirements: Sequence[Any] | None = None,
    pip_install: Callable[[list[str]], Any] | None = None,
    *,
    torch_available: bool | None = None,
    torch_version: str | None = None,
) -> bool:
    """Complete the engine's Python packages on first use; True when all are present.

    Asks ``confirm`` (a Yes/No dialog in the GUI) with the list of packages first, installs
    torch through the PyTorch extension (which picks a CUDA build when a driver is
    present) and the rest through Slicer's pip with Slicer's numpy, SimpleITK and VTK
    pinned. Returns False when the user declines; raises :class:`IPv2Error` with pip's
    output and a hint when an install fails. Never called at import time.
    """
    import importlib
    import importlib.metadata
    import importlib.util
    import tempfile

    import ipv2.slicer.requirements as rq
    from ipv2.core.errors import IPv2Error

    need = rq.missing(rq.ENGINE_REQUIREMENTS if requirements is None else requirements)
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
    if torch_available and torch_version is not None:
        check_torch_version(torch_version)
    if not need and torch_available:
        return True
    if not confirm(rq.confirmation_text(need, torch_needed=not torch_available)):
        return False
    if not torch_available:
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise IPv2Error(
                "IPv2 needs the PyTorch extension: install 'PyTorch' from the Extensions "
                "Manager, restart Slicer and try again"
            ) from exc
        try:
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=rq.TORCH_SPEC
            )
        except Exception as exc:  # CalledProcessError from slicer.util.pip_install, and others
            raise IPv2Error(_failure_text(f"torch{rq.TORCH_SPEC}", exc)) from exc
        if torch is None:
            raise IPv2Error("PyTorch was not installed; IPv2 cannot run without it")
    if need:
        install = pip_install if pip_install is not None else run_pip
        fd, constraints = tempfile.mkstemp(prefix="ipv2-constraints-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(rq.protected_pins()) + "\n")
        try:
            install(rq.pip_arguments(need, constraints))
        except Exception as exc:
            raise IPv2Error(_failure_text(", ".join(r.pip for r in need), exc)) from exc
        finally:
            os.unlink(constraints)
    importlib.invalidate_caches()
    return True


def check_torch_version(version: str | None = None) -> None:
    """Refuse an installed torch the engine cannot use (present is not enough), naming
    the fix; nothing when torch is absent (the install offers it) or suitable.

    Called by the actions that run a network (denoising, the weak denoiser), not by the
    dependency check every button makes: the masks and IPv1 fusions need no torch, and
    another extension's older torch must not block them.
    """
    import importlib.metadata

    import ipv2.slicer.requirements as rq
    from ipv2.core.errors import IPv2Error

    if version is None:
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return
    problem = rq.torch_version_problem(version)
    if problem is not None:
        raise IPv2Error(problem)


def _failure_text(names: str, exc: BaseException) -> str:
    """What the user reads when an install failed: pip's own words, then a next step."""
    import ipv2.slicer.requirements as rq
    from ipv2.slicer.panel_actions import process_output

    output = process_output(exc)
    if output:
        return f"installing {names} failed:\n{output}\n\n{rq.failure_hint(output)}"
    # The installer printed pip's lines to the console and kept nothing (PyTorchUtils
    # through slicer.util.pip_install): say where they are, and the usual causes.
    return (
        f"installing {names} failed: {type(exc).__name__}: {exc}\n"
        "pip's messages are in Slicer's Python console (View > Python Console).\n\n"
        f"If this computer is offline or behind a proxy: {rq.failure_hint('connection')}"
    )
