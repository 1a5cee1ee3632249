"""User-facing errors.

An :class:`IPv2Error` is a problem with the user's input or environment that the user
can fix; the CLI prints its message without a traceback and exits non-zero. Everything
else is a bug and keeps its traceback.
"""


class IPv2Error(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class InputError(IPv2Error):
    """An input file, folder or parameter is unusable."""


class OutputExistsError(IPv2Error):
    """Writing would overwrite the user's data."""


class CancelledError(IPv2Error):
    """The user cancelled a long operation."""


def disk_full_message(exc: BaseException) -> str | None:
    """The one-line message for an exception caused by a full disk or quota, else None.

    A full disk surfaces as ``OSError`` (ENOSPC, EDQUOT) from Python's own writes, but as
    a library's own exception type from native writers (safetensors reports
    ``SafetensorError: ... os error 28``); both mean the same to the user.
    """
    import errno
    import re

    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    where = ""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in codes:
        where = f" while writing {exc.filename}" if exc.filename else ""
    elif isinstance(exc, OSError) and re.fullmatch(r"\d+ requested and \d+ written", text):
        pass  # numpy's short write (ndarray.tofile, np.save) carries no errno
    elif type(exc).__name__ != "SafetensorError" or "os error 28" not in text:
        return None
    return (
        f"disk full{where}: free space on that disk (or write elsewhere) and run the command "
        "again; finished outputs and checkpoints are intact (a training run continues with "
        "--resume)"
    )
