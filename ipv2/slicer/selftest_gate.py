"""Whether the in-Slicer self-tests can run here, or why they are skipped.

The Extension Index build servers run each module's self-test (``WITH_GENERIC_TESTS``)
in a Slicer without the optional packages and without anyone to answer the install
question. The self-tests therefore skip with a reason unless ``IPV2_SELFTEST_INSTALL=1``
asks to install torch, scikit-image, OpenCV and the rest without a question (through the
same :func:`ipv2.slicer.dependencies.install_dependencies` the panels use).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

INSTALL_FLAG = "IPV2_SELFTEST_INSTALL"


def selftest_skip_reason(
    *,
    environ: Mapping[str, str] | None = None,
    requirements: Sequence[Any] | None = None,
    torch_available: bool | None = None,
    install: Callable[[], Any] | None = None,
) -> str | None:
    """None when the self-test can run (installing first if the flag asks), else why not."""
    import ipv2.slicer.requirements as rq
    from ipv2.slicer.dependencies import install_dependencies

    env = os.environ if environ is None else environ
    need = rq.missing(rq.ENGINE_REQUIREMENTS if requirements is None else requirements)
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
    names = [r.name for r in need] + ([] if torch_available else ["torch"])
    if not names:
        return None
    if env.get(INSTALL_FLAG, "").strip().lower() in ("1", "true", "yes"):
        if install is not None:
            install()
        else:
            install_dependencies(lambda _text: True, requirements)  # no question: the flag said yes
        return None
    return (
        f"IPv2 self-test skipped: {', '.join(sorted(names))} not installed "
        f"(set {INSTALL_FLAG}=1 to install them before the test)"
    )
