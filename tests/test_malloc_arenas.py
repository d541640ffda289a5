"""The daemon's cap on glibc's malloc arenas (sandbox_exporter/malloc_arenas.py), in a
child interpreter: eight threads allocating at once, then the arenas malloc_info lists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandbox_exporter.malloc_arenas import glibc
from tests.process import ROOT

pytestmark = pytest.mark.skipif(not glibc(), reason="glibc's arenas: this C library is another")

CHILD = """
import ctypes, re, sys, tempfile, threading
from sandbox_exporter.malloc_arenas import cap_malloc_arenas

if sys.argv[1] == "cap":
    print(cap_malloc_arenas())
together = threading.Barrier(9)

def allocate():
    together.wait()
    kept = [bytearray(4096) for _ in range(64)]  # over 512 bytes: glibc's, not pymalloc's
    together.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
together.wait()
together.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile() as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(len(re.findall(r'<heap nr="', open(out.name).read())))
for thread in threads:
    thread.join()
"""


def arenas(how: str, **env: str) -> tuple[str, int]:
    """(what cap_malloc_arenas said, the arenas counted) in a child, capped or not."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", CHILD, how],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    *said, counted = done.stdout.split("\n")[:-1]
    return "".join(said), int(counted)


def test_uncapped_each_thread_gets_an_arena_of_its_own() -> None:
    """The control: what the cap prevents happens here (one arena per new thread)."""
    _, counted = arenas("none")
    assert counted > 2


def test_capped_eight_threads_share_two_arenas() -> None:
    said, counted = arenas("cap")
    assert said == "capped at 2"
    assert counted <= 2


def test_malloc_arena_max_in_the_environment_wins() -> None:
    said, counted = arenas("cap", MALLOC_ARENA_MAX="4")
    assert said == "MALLOC_ARENA_MAX=4 from the environment"
    assert 2 < counted <= 4
