"""One writer per run folder, enforced by the operating system.

Two trainers writing into one folder interleave checkpoints of different runs, and a
``--resume`` of a run that is still training starts a second writer beside it. A pid in
``process.json`` cannot prevent either: checking it and starting to write are two steps
another process can fall between, and pids are reused. An OS file lock can: it is taken
atomically, held for the life of the open file, and released by the kernel however the
holder ends (exit, crash, SIGKILL), so a lock is never stale. The holder's pid is written
into the lock file only to name it in the refusal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from ipv2.core.errors import InputError

LOCK_NAME = ".ipv2-run.lock"
_WINDOWS_LOCK_OFFSET = 1 << 20


class RunFolderBusy(InputError):
    """Another live process holds the run folder."""


def _try_lock(handle: IO[bytes]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        # Lock one byte far past the pid text, so others can still read who holds it
        # (Windows byte locks also block reads); locking past the end is allowed.
        try:
            handle.seek(_WINDOWS_LOCK_OFFSET)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            handle.seek(0)
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunLock:
    """Held while a process writes into a run folder; ``with RunLock(folder):``.

    Raises :class:`RunFolderBusy` when another process holds it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, action: str = "train") -> None:
        self.folder = Path(folder)
        self.action = action
        self._handle: IO[bytes] | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> RunLock:
        handle = self.path.open("a+b")
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().decode("ascii", errors="replace").strip() or "unknown"
            handle.close()
            raise RunFolderBusy(
                f"{self.folder} is in use by another ipv2 process (pid {holder}); "
                f"wait for it to finish or stop it before you {self.action} there"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()).encode("ascii"))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()  # closing drops the lock
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder_pid(folder: str | os.PathLike[str]) -> int | None:
    """The pid of the live process holding ``folder``'s lock, or None when it is free.

    Probes by trying the lock itself (and letting go at once), so a crashed holder never
    reads as alive.
    """
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    with path.open("a+b") as handle:
        if _try_lock(handle):
            return None
        handle.seek(0)
        text = handle.read().decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else -1
