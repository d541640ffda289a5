"""A realistic load on an exporter, from a process of its own: by default two
Prometheus servers scraping /metrics every 15 s (asking for OpenMetrics, as
Prometheus does) and five people with the landing page open, each refreshing it
every second. Prints the answer times (JSON) when done.

    python benchmarks/realistic_load.py http://127.0.0.1:9878 60 [--scrapers 2]
        [--scrape-every 15] [--pages 5]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request

ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def visitor(
    url: str,
    every: float,
    offset: float,
    until: float,
    times: list[float],
    errors: list[str],
    headers: dict[str, str],
) -> None:
    pause = threading.Event()
    pause.wait(offset)
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http://
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http://
                answer.read()
            times.append(time.monotonic() - began)
        except OSError as exc:
            errors.append(str(exc))
        pause.wait(max(0.0, began + every - time.monotonic()))  # the next visit is due then


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--scrapers", type=int, default=2)
    parser.add_argument("--scrape-every", type=float, default=15.0)
    parser.add_argument("--pages", type=int, default=5)
    args = parser.parse_args()
    base, until = args.url.rstrip("/"), time.monotonic() + args.seconds
    scrapes: list[float] = []
    pages: list[float] = []
    errors: list[str] = []
    spread = args.scrape_every / max(args.scrapers, 1)
    threads = [
        threading.Thread(
            target=visitor,
            args=(
                f"{base}/metrics",
                args.scrape_every,
                spread * i,
                until,
                scrapes,
                errors,
                {"Accept": ACCEPT},
            ),
        )
        for i in range(args.scrapers)
    ] + [
        threading.Thread(target=visitor, args=(f"{base}/", 1.0, 0.2 * i, until, pages, errors, {}))
        for i in range(args.pages)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"metrics": scrapes, "page": pages, "errors": errors}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
