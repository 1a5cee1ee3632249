"""Unset path parameters, recognised the same way by both panels.

Slicer's parameterNodeWrapper stores a ``pathlib.Path`` field as text and reads an unset
one back as ``Path()``, whose text is ``"."`` (``PathSerializer.default`` returns
``self.type()``; Slicer v5.8.0/v5.10.0 Base/Python/slicer/parameterNodeWrapper/serializers.py).
The GUI connector writes that "." into the ``ctkPathLineEdit``, which then emits
``currentPathChanged(".")`` while the panel is being set up. Treating "." as "the
current folder" made IPv2Train inspect Slicer's working folder as a training source and
IPv2Denoise describe it as a model, so every panel path goes through :func:`optional_path`.
Pure Python (no Slicer, no Qt) and importable under Python 3.9.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def optional_path(value: str | os.PathLike[str] | Any) -> Path | None:
    """The path the user chose, or None when the field is unset (None, "", " " or ".")."""
    if value is None:
        return None
    text = str(value).strip()
    if text in ("", "."):
        return None
    return Path(text)


def path_text(value: str | os.PathLike[str] | Any) -> str:
    """A parameter-node path as text: '' for unset (see :func:`optional_path`)."""
    path = optional_path(value)
    return "" if path is None else str(path)
