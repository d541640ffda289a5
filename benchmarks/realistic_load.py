"""A realistic load on an exporter, from a process of its own: two Prometheus servers
scraping /metrics every 15 s, and five people with the landing page open, each
refreshing it every second. Prints the answer times (JSON) when done.

    python benchmarks/realistic_load.py http://127.0.0.1:9878 60
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request


def visitor(url: str, every: float, offset: float, until: float, times: list[float],
            errors: list[str]) -> None:  # fmt: skip
    pause = threading.Event()
    pause.wait(offset)
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - http://
                answer.read()
            times.append(time.monotonic() - began)
        except OSError as exc:
            errors.append(str(exc))
        pause.wait(max(0.0, began + every - time.monotonic()))  # the next visit is due then


def main(argv: list[str]) -> int:
    base, seconds = argv[0].rstrip("/"), float(argv[1])
    until = time.monotonic() + seconds
    scrapes: list[float] = []
    pages: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=visitor, args=(f"{base}/metrics", 15.0, 7.5 * i, until, scrapes, errors)
        )
        for i in range(2)
    ] + [
        threading.Thread(target=visitor, args=(f"{base}/", 1.0, 0.2 * i, until, pages, errors))
        for i in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"metrics": scrapes, "page": pages, "errors": errors}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
