"""Two glibc malloc arenas for the daemon, not one per thread.

glibc gives each new thread that allocates an arena of its own, up to eight per
core. The daemon starts a thread for every run and every backend call, so under
bursts its threads rotate through all of them, and each keeps freed memory that
only the threads that happen to land on it can reuse. In an hour-long chaos soak
(BENCHMARKS.md, "Soak") resident memory grew about 40 MB an hour while the Python
heap and the memory in use stayed flat; the threads' arenas held the growth, as
free memory that `malloc_trim` did not give back. With two arenas it stayed flat.

`MALLOC_ARENA_MAX` in the environment wins (glibc has read it already), and a C
library other than glibc is left alone.
"""

from __future__ import annotations

import ctypes
import os

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def cap_malloc_arenas(arenas: int = ARENAS) -> str:
    """Cap glibc's arenas at `arenas` from now on (call it before threads start);
    what was done, in words, for the start-up log."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} from the environment"
    if not glibc():
        return "not glibc: its own arenas"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "glibc without mallopt: its own arenas"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not mallopt(_M_ARENA_MAX, arenas):
        return "mallopt refused the cap: glibc's own arenas"
    return f"capped at {arenas}"
