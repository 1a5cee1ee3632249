"""Output files and folders that appear complete or not at all.

Commands that write several files build them in a hidden temporary folder beside the
target and rename it into place at the end. A failure or a cancel removes the temporary
folder, so the user never finds a partial result that looks finished, and an existing
folder with content is never written into.

Single files go the same way through :func:`atomic_file`, the one place that does it: a
hidden temporary file in the target's folder (a rename is only atomic within one file
system), flushed to disk with ``fsync`` so a crash after the rename cannot leave an
empty or truncated file under the final name, then ``os.replace``. JSON, CSV and volume
writers all use it. A target that is a folder, or whose folder does not exist, is refused
with one line before anything is written (a rename onto a folder fails, and must never
become a deletion of it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ipv2.core.errors import InputError, OutputExistsError


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


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    The block writes the temporary file by name (and closes it). On success it is
    fsynced, given normal permissions and renamed over ``path``; on any error, cancel
    included, it is removed and ``path`` is untouched. ``suffix`` ends the temporary
    name: writers that choose the format from the file name (SimpleITK) need the real
    one, e.g. ``.nii.gz``.
    """
    final = Path(path)
    _check_file_target(final)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    except FileNotFoundError as exc:  # the folder vanished since the check
        raise InputError(f"cannot write {final}: folder {final.parent} does not exist") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        publish_permissions(tmp)
        _check_file_target(final)  # a folder may have appeared under the name meanwhile
        try:
            os.replace(tmp, final)
        except IsADirectoryError as exc:
            raise _folder_error(final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_file_target(final: Path) -> None:
    """A file output must not name a folder (a rename would fail, never replace it)."""
    if final.is_dir():
        raise _folder_error(final)
    if not final.parent.is_dir():
        raise InputError(f"cannot write {final}: folder {final.parent} does not exist")


def _folder_error(final: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{final} is a folder, not a file; name a file for this output (the folder was "
        "left as it is)"
    )


@contextmanager
def atomic_text_file(
    path: str | os.PathLike[str], *, newline: str | None = None
) -> Iterator[TextIO]:
    """Yield a UTF-8 text file that replaces ``path`` atomically when the block succeeds.

    ``newline`` is passed to :func:`open` (``""`` for the csv module).
    """
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        yield fh


def _fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk (opened for writing: Windows needs that)."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON through a temporary file and a rename (never half-written)."""
    p = Path(path)
    with atomic_text_file(p) as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=_plain)
        fh.write("\n")
    return p


def _plain(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
