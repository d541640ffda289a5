"""`python3 -m sandbox_exporter.web.healthcheck`: the image's HEALTHCHECK.

Asks this container's exporter for `/-/healthy` at the address it listens on: the
`SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS` it was given, else `:9878`, over plain HTTP
(with `--web.config.file` TLS, override the HEALTHCHECK). Exit 0 when healthy, 1
otherwise, with the answer on stdout for `docker inspect`.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from sandbox_exporter.web.app import parse_listen_address

ENV = "SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS"


def main() -> int:
    host, port = parse_listen_address(os.environ.get(ENV) or ":9878")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - listening on all: ask on loopback
        host = "127.0.0.1" if host != "::" else "::1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/-/healthy"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            print(response.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}")
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
