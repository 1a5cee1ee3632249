"""Unpacking a model archive (.zip) without trusting it.

A model shared as a zip comes from someone else's machine or the internet. Before a
single byte is written, every entry is checked: a name that climbs out of the target
folder (``..``, an absolute or drive path), a symbolic link or any other special file
(Unix mode in the entry's external attributes), an encrypted entry, a duplicate name,
too many entries or a declared total above the size limit refuses the whole archive.
The bytes actually written are counted as well, because the sizes an entry declares
can lie (a zip bomb); the CRC check of :mod:`zipfile` catches damaged data. Nothing in
the archive is executed or unpickled: it is only copied out.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ipv2.core.errors import InputError

MAX_ENTRIES = 1000
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_member_path(name: str) -> PurePosixPath:
    """The entry's relative path, or :class:`InputError` if it could land outside the target."""
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if text.startswith("/") or _DRIVE.match(text) or path.is_absolute():
        raise InputError(f"refused archive entry {name!r}: absolute paths are not allowed")
    if any(part == ".." for part in path.parts):
        raise InputError(f"refused archive entry {name!r}: '..' would write outside the folder")
    if not path.parts or "\x00" in text:
        raise InputError(f"refused archive entry {name!r}: not a usable file name")
    return path


def _unix_mode(info: zipfile.ZipInfo) -> int:
    """The Unix file mode an entry carries (0 when it was made without one, e.g. on Windows)."""
    return (info.external_attr >> 16) & 0xFFFF


def check_entries(infos: list[zipfile.ZipInfo], *, max_bytes: int) -> None:
    """Refuse the archive unless every entry is a plain file or folder safely inside it."""
    if len(infos) > MAX_ENTRIES:
        raise InputError(
            f"refused archive: {len(infos)} entries, a model folder needs a handful "
            f"(limit {MAX_ENTRIES})"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        path = safe_member_path(info.filename)
        mode = _unix_mode(info)
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise InputError(
                f"refused archive entry {info.filename!r}: it is a symbolic link, which could "
                "point anywhere on this computer"
            )
        if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"refused archive entry {info.filename!r}: not a plain file")
        if info.flag_bits & 0x1:
            raise InputError(f"refused archive entry {info.filename!r}: it is encrypted")
        key = path.as_posix().rstrip("/").lower()
        if key in seen:
            raise InputError(f"refused archive: {info.filename!r} appears twice")
        seen.add(key)
        total += max(int(info.file_size), 0)
    if total > max_bytes:
        raise InputError(
            f"refused archive: it unpacks to {total / 2**20:.1f} MiB, over the "
            f"{max_bytes / 2**20:.0f} MiB limit (raise it with --max-size if you trust it)"
        )


def extract_zip(
    archive: str | os.PathLike[str], target: str | os.PathLike[str], *, max_bytes: int
) -> Path:
    """Unpack ``archive`` into the existing empty folder ``target`` after checking it all."""
    out = Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            check_entries(infos, max_bytes=max_bytes)
            written = 0
            for info in infos:
                dest = out.joinpath(*safe_member_path(info.filename).parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "xb") as dst:
                    while block := src.read(_CHUNK):
                        written += len(block)
                        if written > max_bytes:
                            raise InputError(
                                f"refused archive {archive}: it unpacks to more than the "
                                f"{max_bytes / 2**20:.0f} MiB it may (its sizes are false)"
                            )
                        dst.write(block)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive} is not a usable zip archive ({exc})") from None
    except (zipfile.LargeZipFile, NotImplementedError) as exc:
        raise InputError(f"{archive} uses a zip feature ipv2 does not read ({exc})") from None
    return out


def find_model_folder(root: Path, marker: str) -> Path:
    """The folder of an unpacked archive holding ``marker``: the top or its only subfolder."""
    if (root / marker).is_file():
        return root
    found = [p.parent for p in root.glob(f"*/{marker}")]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(sorted(p.name for p in found))
        raise InputError(f"the archive holds several model folders ({names}); install one")
    raise InputError(
        f"the archive holds no model folder: {marker} is neither at its top nor in a folder "
        "directly below it"
    )
