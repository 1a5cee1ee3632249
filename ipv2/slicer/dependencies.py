"""Completing the engine's Python packages inside Slicer, on first use only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import slicer


def install_dependencies(
    confirm: Callable[[str], bool],
    requirements: Sequence[Any] | None = None,
    pip_install: Callable[[list[str]], Any] | None = None,
    *,
    torch_available: bool | None = None,
) -> bool:
    """Complete the engine's Python packages on first use; True when all are present.

    Asks ``confirm`` (a Yes/No dialog in the GUI) with the list of packages first, installs
    torch through the PyTorch extension (which picks a CUDA build when a driver is
    present) and the rest through Slicer's pip with Slicer's numpy, SimpleITK and VTK
    pinned. Returns False when the user declines; raises :class:`IPv2Error` with pip's
    output and a hint when an install fails. Never called at import time.
    """
    import importlib
    import importlib.util
    import os
    import tempfile

    import ipv2.slicer.requirements as rq
    from ipv2.core.errors import IPv2Error

    need = rq.missing(rq.ENGINE_REQUIREMENTS if requirements is None else requirements)
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
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
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=rq.TORCH_SPEC
        )
        if torch is None:
            raise IPv2Error("PyTorch was not installed; IPv2 cannot run without it")
    if need:
        install = pip_install if pip_install is not None else slicer.util.pip_install
        fd, constraints = tempfile.mkstemp(prefix="ipv2-constraints-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(rq.protected_pins()) + "\n")
        try:
            install(rq.pip_arguments(need, constraints))
        except Exception as exc:
            output = str(getattr(exc, "output", "") or getattr(exc, "stderr", "") or exc)
            names = ", ".join(r.pip for r in need)
            raise IPv2Error(
                f"installing {names} failed:\n{output}\n\n{rq.failure_hint(output)}"
            ) from exc
        finally:
            os.unlink(constraints)
    importlib.invalidate_caches()
    return True
