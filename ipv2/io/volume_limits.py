"""The largest image the readers will decode, checked against the size a header declares.

Volume and image headers declare their size before any pixel is read, and a reader trusts
that declaration when it allocates: a 200-byte NRRD can declare petabytes. The readers
therefore read the header first and call :func:`check_declared_size`, which refuses a
pixel buffer above :func:`max_volume_bytes` with one line naming the declared size and
what to do, so no reader is ever handed a header that can exhaust memory or, under an
address-space limit, crash the process.

The limit is a quarter of the memory available to this process (a read holds the
reader's buffer, a copy and the float32 volume at once, and the work after it needs as
much again), or ``IPV2_MAX_VOLUME_BYTES`` when set (a number of bytes, optionally with a
K, M, G or T suffix, binary units).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

from ipv2.core.errors import InputError
from ipv2.core.memory import available_memory_bytes, format_bytes

MAX_VOLUME_ENV = "IPV2_MAX_VOLUME_BYTES"
MEMORY_SHARE = 4  # the limit is 1/MEMORY_SHARE of the available memory
UNKNOWN_MEMORY_LIMIT = 8 << 30  # when no platform source says what is available
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_volume_bytes() -> tuple[int, str]:
    """The largest pixel buffer a reader may allocate, and where that figure comes from."""
    raw = os.environ.get(MAX_VOLUME_ENV, "").strip()
    if raw:
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", raw, flags=re.IGNORECASE)
        if match is None or int(match[1]) == 0:
            raise InputError(
                f"{MAX_VOLUME_ENV} must be a positive number of bytes such as 8000000000 or "
                f"8G, got {raw!r}"
            )
        return int(match[1]) * _SUFFIXES[match[2].upper()], f"set by {MAX_VOLUME_ENV}"
    available = available_memory_bytes()
    if available is None:
        return UNKNOWN_MEMORY_LIMIT, "the default when available memory cannot be read"
    return (
        max(available // MEMORY_SHARE, 1),
        f"a quarter of the {format_bytes(available)} of memory available",
    )


def check_declared_size(
    source: str, *, size: Sequence[int], bytes_per_pixel: int, unit: str = "voxels of data"
) -> None:
    """Refuse ``source`` when ``size`` (x, y[, z]) at ``bytes_per_pixel`` exceeds the limit.

    ``unit`` completes "declares 512 x 512 x 300 ..." in the message, e.g. "voxels of
    16-bit signed integer".
    """
    needed = math.prod(int(s) for s in size) * int(bytes_per_pixel)
    limit, why = max_volume_bytes()
    if needed <= limit:
        return
    shape = " x ".join(str(int(s)) for s in size)
    raise InputError(
        f"{source} declares {shape} {unit} ({format_bytes(needed)} of pixel data), more "
        f"than the {format_bytes(limit)} limit ({why}); nothing was read. If the file is "
        f"genuine, free memory or raise the limit with {MAX_VOLUME_ENV}=BYTES (e.g. 64G); "
        "otherwise the header is damaged"
    )
