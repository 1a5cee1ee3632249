"""The one way the engine reads a JSON file it did not just write.

Run records, model descriptions, manifests and training state are all files a user can
copy, edit, truncate or fill with something else. Whatever is wrong with one, the user
gets a single-line :class:`InputError` naming the file and what it should have been,
never a ``JSONDecodeError`` or ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError

# No engine JSON file is anywhere near this; a bigger one is not ours (or is an attack
# on the parser's memory), so it is refused before it is read.
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parse ``path``; ``what`` names the file's role in the error ("a training config").

    A missing file raises :class:`FileNotFoundError` unchanged, so callers can say what
    its absence means in their own context.
    """
    file = Path(path)
    size = file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(
            f"{file} is {size / 2**20:.0f} MiB, far larger than {what} can be; "
            "it is not an ipv2 file (restore or recreate it)"
        )
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        reason = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        reason = f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except RecursionError:
        reason = "is nested too deeply to be JSON the engine wrote"
    except IsADirectoryError:
        reason = "is a folder"
    raise InputError(f"{file} {reason}; it should be {what} (damaged or replaced?)")


def read_json_object(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """:func:`read_json` for files whose top level must be an object."""
    data = read_json(path, what=what)
    if not isinstance(data, dict):
        raise InputError(
            f"{path} holds a JSON {type(data).__name__}, not an object; it should be {what}"
        )
    return data
