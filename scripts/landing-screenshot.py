#!/usr/bin/env python3
"""docs/landing.png, from a real run: `sandbox-exporter run` on the namespace backend
(root and util-linux unshare) with one target that works, one whose command fails
and one that also runs bursts, loaded in headless Chromium (as a visitor gets it,
refreshing) once each target has a few runs and a burst has run, with one probe
started from the page and its log shown.

The targets are named in the config, so the page has no "Backends not found"
section: that one is there only with `targets: auto`.

    .venv/bin/python scripts/landing-screenshot.py [--output docs/landing.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import headless_chromium, missing, probe_from_the_page  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.process import ExporterProcess  # noqa: E402

RUNS = 5  # of each target before the picture
TARGETS = ("floor", "floor-config-check", "floor-burst")


def config(state_dir: Path) -> str:
    return f"""instance: edge-01
defaults:
  interval: 2s
  jitter: 0s
targets:
  - name: floor
    backend: namespace
    namespace: {{state_dir: "{state_dir}"}}
  - name: floor-config-check
    backend: namespace
    namespace: {{state_dir: "{state_dir}"}}
    command: ["cat", "/etc/sandbox-probe.conf"]
  - name: floor-burst
    backend: namespace
    namespace: {{state_dir: "{state_dir}"}}
    burst: {{concurrency: 5, interval: 6s}}
"""


def runs(exporter: ExporterProcess, target: str) -> float:
    return sum(
        exporter.sample("sandbox_probes_total", target=target, result=result) or 0.0
        for result in ("success", "failure")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "landing.png")
    args = parser.parse_args()
    if (why := missing()) is not None:
        print(f"cannot take the screenshot: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="landing-screenshot-") as work:
        path = Path(work) / "sandbox-exporter.yaml"
        path.write_text(config(Path(work) / "state"))
        exporter = ExporterProcess(path)
        browser = None
        try:
            wait_for(
                lambda: (
                    all(runs(exporter, name) >= RUNS for name in TARGETS)
                    and exporter.event("burst") is not None
                ),
                timeout=120,
                what=f"{RUNS} runs of each target and a burst",
            )
            browser = headless_chromium(width=1600, height=1000)
            browser.get(exporter.url)
            probe_from_the_page(browser, "floor")
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.execute_cdp_cmd(  # the whole page, not the window's height of it
                "Emulation.setDeviceMetricsOverride",
                {"width": 1600, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(args.output))
        finally:
            if browser is not None:
                browser.quit()
            exporter.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
