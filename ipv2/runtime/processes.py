"""Whether a process id names a live process, on POSIX and Windows.

Jobs, run folders and their locks all ask it; a zombie (exited, not yet reaped) counts
as gone, because it will never write or train again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether a process with this id still runs (and is not a zombie)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))  # type: ignore[attr-defined]
        ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS) or it just exited: kill(0) said it was there
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
