"""Output folders that appear complete or not at all.

Commands that write several files build them in a hidden temporary folder beside the
target and rename it into place at the end. A failure or a cancel removes the temporary
folder, so the user never finds a partial result that looks finished, and an existing
folder with content is never written into.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ipv2.errors import InputError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path: str | os.PathLike[str]) -> None:
    """Give a file made by ``mkstemp``/``mkdtemp`` (private, 0600/0700) normal permissions.

    Temporary names are private while being written; once renamed into place the result
    should be readable like any file the user creates.
    """
    p = Path(path)
    mode = 0o777 if p.is_dir() else 0o666
    p.chmod(mode & ~_umask())


def check_new_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse a target that holds files; an empty existing folder is fine."""
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise OutputExistsError(
            f"output {p} already exists and is not empty; choose a new folder so nothing "
            "of yours is overwritten"
        )
    if not p.parent.exists():
        raise InputError(f"cannot create {p}: its parent folder {p.parent} does not exist")
    return p


@contextmanager
def atomic_output_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` only if the block succeeds."""
    final = check_new_output_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            final.rmdir()  # empty, checked above
        publish_permissions(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON through a temporary file and a rename (never half-written)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=_plain)
            fh.write("\n")
        publish_permissions(tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _plain(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
