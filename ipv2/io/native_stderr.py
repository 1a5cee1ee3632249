"""Hold back what C++ readers print to stderr until the read is known to have worked.

ITK's image IO, MetaIO, nifticlib and VNL write diagnostics straight to file descriptor 2
("MetaImage: M_Read: Error parsing file", "** ERROR: nifti_convert_nhdr2nim: bad
datatype", matrix dumps) around the exception they raise, and some report a failure
only there: MetaIO prints "Uncompress failed" and returns an image of whatever the
buffer held. The engine turns a failed read into one line that names the file, so:

- the block runs with fd 2 sent to a temporary file (``sys.stderr`` flushed first);
- :meth:`HeldStderr.failure` finds a line that reports a failure, which the reader
  turns into its error even though no exception was raised;
- :meth:`HeldStderr.replay` passes the text on once the whole read has succeeded, so
  warnings about a file that did load (odd sform scales, say) are still seen; after a
  failure it is dropped.

Where file descriptor 2 cannot be duplicated (a GUI process without a console) the block
runs uncaptured and nothing is held. File descriptor 2 belongs to the whole process, so
held blocks are serialised by a lock: two threads swapping it at once could leave it
pointing at a deleted temporary file. Text other threads write meanwhile is held too.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_STDERR_FD = 2
_SWAP = threading.RLock()  # reentrant: a held block may call another reader
_FAILURE = re.compile(r"\b(failed|error)\b", re.IGNORECASE)


@dataclass
class HeldStderr:
    """What native code wrote to stderr during a held block."""

    text: str = ""

    def failure(self) -> str | None:
        """The first line that reports a failure, tidied; else None.

        ITK warnings ("WARNING: In file, line N" and the lines up to the next blank
        line) are not failures, whatever words they use.
        """
        in_warning = False
        for line in self.text.splitlines():
            if "warning" in line.lower():
                in_warning = True
            elif not line.strip():
                in_warning = False
            elif not in_warning and _FAILURE.search(line):
                return " ".join(line.replace("*", " ").split())
        return None

    def replay(self) -> None:
        """Write the held text to stderr (after the read it came from has succeeded)."""
        if self.text:
            os.write(_STDERR_FD, self.text.encode("utf-8", errors="replace"))
            self.text = ""


@contextmanager
def native_stderr_held() -> Iterator[HeldStderr]:
    """Run the block with fd 2 sent to a temporary file; its text ends up in the holder."""
    held = HeldStderr()
    with _SWAP:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(_STDERR_FD)
        except (OSError, ValueError):
            yield held
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), _STDERR_FD)
                try:
                    yield held
                finally:
                    os.dup2(saved, _STDERR_FD)
                    sink.seek(0)
                    held.text = sink.read().decode("utf-8", errors="replace")
        finally:
            os.close(saved)
