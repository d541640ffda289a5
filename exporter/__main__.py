import sys

from sandbox_exporter.cli import main

if __name__ == "__main__":
    print(
        "sandbox-exporter: `python -m exporter` is deprecated and goes in 0.3.0; "
        "use `sandbox-exporter` or `python -m sandbox_exporter`",
        file=sys.stderr,
    )
    raise SystemExit(main())
