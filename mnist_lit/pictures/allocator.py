"""Keep freed memory in the process between pictures instead of handing it back to the operating system.

Reading one photo allocates and frees a few dozen arrays of about 0.2-1 MB (analysis-size images in uint8,
int32 and float32). With glibc's default settings each of them is mapped fresh from the kernel and returned when
freed, so every page is faulted in again for the next array: kernel time on top of the image work. Raising
glibc's top pad (``M_TOP_PAD``, see ``man 3 mallopt``) keeps :data:`TOP_PAD` bytes of freed heap in the process,
where the next picture reuses it. Results do not change (only where memory comes from); other C libraries
(macOS, musl, Windows) are left as they are.
"""

from __future__ import annotations

import ctypes

#: Freed heap memory kept for reuse, bytes: several analysis-size arrays (512 x 512 float32 is 1 MB).
TOP_PAD = 16 * 1024 * 1024
#: glibc's ``mallopt`` parameter number for the top pad (``M_TOP_PAD`` in ``<malloc.h>``).
M_TOP_PAD = -2


def keep_freed_memory(top_pad: int = TOP_PAD) -> bool:
    """Ask glibc's allocator to keep ``top_pad`` bytes of freed heap for reuse (process-wide, idempotent).

    Returns:
        True when set; False where the C library has no ``mallopt`` (not glibc) or refuses the value.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into the process
    except (OSError, AttributeError, TypeError):  # no mallopt (not glibc), or no such handle (Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_TOP_PAD, top_pad) == 1
