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
