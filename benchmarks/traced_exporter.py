"""`sandbox-exporter` with its memory watched from inside, for the soak (soak.py).

    python benchmarks/traced_exporter.py --out DIR [--every 5] [--frames 1]
        [--malloc-trim 0] -- run --config.file ...

Runs the exporter's own `main()` in this process (signals, the web process and
the worker processes are as with `python -m sandbox_exporter`), with a thread
beside it that every `--every` seconds appends one JSON line to DIR/heap.jsonl:

- the Python heap as tracemalloc sees it (current and peak bytes traced, and
  tracemalloc's own memory, which RSS includes and the exporter alone would not),
  the blocks the interpreter has allocated, and the objects the GC tracks;
- glibc's malloc as `mallinfo2()` adds it up over every arena (bytes in use, free
  but kept, mapped), and from `malloc_info()` the number of arenas and what the
  main arena and the threads' arenas hold from the kernel: the native side, which
  tracemalloc does not see.

A file DIR/take-LABEL asks for a tracemalloc snapshot: it is dumped to
DIR/heap-LABEL.snapshot and the request removed (soak.py asks for one at the end
of the warm-up and one at the end, and diffs them by line). `--malloc-trim S`
calls `malloc_trim(0)` every S seconds, an experiment: what glibc keeps free
but does not give back, returned to the kernel.

Benchmark code: nothing of it is in the package.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from xml.etree import ElementTree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class Glibc:
    """glibc's malloc statistics and trim, or None where the C library is another."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.libc.mallinfo2.restype = _Mallinfo2
        self.libc.fopen.restype = ctypes.c_void_p
        self.libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
        self.libc.fclose.argtypes = (ctypes.c_void_p,)
        self.libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
        self.libc.malloc_trim.argtypes = (ctypes.c_size_t,)

    def info(self) -> dict[str, int]:
        found = self.libc.mallinfo2()
        figures = {
            "malloc_in_use": found.uordblks + found.hblkhd,  # chunks in use, and mmapped ones
            "malloc_free_kept": found.fordblks,  # free chunks glibc keeps in its arenas
            "malloc_arena_bytes": found.arena,  # what the arenas hold from the kernel
            "malloc_mmapped": found.hblkhd,
        }
        heaps = self._heaps()
        figures["malloc_arenas"] = len(heaps)
        figures["malloc_main_arena"] = heaps.get("0", 0)
        figures["malloc_thread_arenas"] = sum(v for k, v in heaps.items() if k != "0")
        return figures

    def _heaps(self) -> dict[str, int]:
        """Each arena's memory from the kernel (malloc_info's `system current`), by number."""
        with tempfile.NamedTemporaryFile(suffix=".xml") as out:
            stream = self.libc.fopen(out.name.encode(), b"w")
            if not stream:
                return {}
            self.libc.malloc_info(0, stream)
            self.libc.fclose(stream)
            document = ElementTree.fromstring(Path(out.name).read_text())  # noqa: S314 - glibc wrote it
        return {
            heap.get("nr", "?"): int(system.get("size", 0))
            for heap in document.iter("heap")
            for system in heap.iter("system")
            if system.get("type") == "current"
        }

    def trim(self) -> int:
        return int(self.libc.malloc_trim(0))


def snapshot(out: Path, label: str) -> None:
    """The heap as tracemalloc traces it, to DIR/heap-LABEL.snapshot (written whole, then
    renamed: a reader never sees half of one)."""
    taken = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    partial = out / f"heap-{label}.partial"
    taken.dump(str(partial))
    partial.rename(out / f"heap-{label}.snapshot")


def watch(out: Path, every: float, trim_every: float) -> None:
    glibc: Glibc | None
    try:
        glibc = Glibc()
    except (OSError, AttributeError):
        glibc = None
    start = time.monotonic()
    next_sample = start
    next_trim = start + trim_every if trim_every else float("inf")
    with (out / "heap.jsonl").open("a") as log:
        while True:
            now = time.monotonic()
            for request in sorted(out.glob("take-*")):
                # a snapshot builds a Python object per trace: taken when asked, not on a
                # timer, so the soak can keep it out of the figures it fits a slope to
                snapshot(out, request.name.removeprefix("take-"))
                request.unlink()
            if now >= next_trim and glibc is not None:
                glibc.trim()
                next_trim += trim_every
            if now >= next_sample:
                current, peak = tracemalloc.get_traced_memory()
                line = {
                    "t": round(now - start, 3),
                    "traced": current,
                    "traced_peak": peak,
                    "tracemalloc_own": tracemalloc.get_tracemalloc_memory(),
                    "blocks": sys.getallocatedblocks(),
                    "gc_objects": len(gc.get_objects()),
                    "threads": threading.active_count(),
                    **(glibc.info() if glibc is not None else {}),
                }
                log.write(json.dumps(line) + "\n")
                log.flush()
                next_sample += every
            time.sleep(0.2)  # the watcher's tick: samples, trims and requested snapshots


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--malloc-trim", type=float, default=0.0)
    args = parser.parse_args(argv[:split])
    args.out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(args.frames)
    threading.Thread(
        target=watch,
        args=(args.out, args.every, args.malloc_trim),
        daemon=True,
        name="heap-watch",
    ).start()
    from sandbox_exporter.cli import main as exporter

    return exporter(argv[split + 1 :])


if __name__ == "__main__":
    raise SystemExit(main())
