"""`sandbox-exporter init`: a commented starter config for what this machine has.

A `pip install` brings no example files; this writes the first config from what
`targets: auto` finds here (with the addresses it found), so that it passes
`check-config` and probes as written. What was not found is there too, commented
out, with why, ready to be uncommented once it is there. Its first line points
YAML-language-server editors at the JSON Schema installed with the package, so a
typo is marked as it is typed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any, cast

import yaml

from sandbox_exporter import backends
from sandbox_exporter.backends.base import Deadline, Images, ImageStore
from sandbox_exporter.commands.bench import BenchError, parse_backend_names
from sandbox_exporter.config import discovery
from sandbox_exporter.config.schema import SCHEMA_FILE
from sandbox_exporter.config.settings import DEFAULT_IMAGE, Timeouts
from sandbox_exporter.images.busybox import LOCAL_IMAGE

HEADER = """\
# yaml-language-server: $schema={schema}
# sandbox-exporter starter config, written by `sandbox-exporter init` on {host}.
# Check it:  sandbox-exporter check-config --config.file {file}
# Run it:    sandbox-exporter run --config.file {file}   (then open http://localhost:9878/)
# Every key, with its default: docs/reference/configuration.md.
defaults:
  interval: 60s          # between the starts of two probes of a target
  jitter: 10%            # random delay added to each run
  timeouts: {{create: 30s, start: 60s, exec: 30s, stop: 30s, remove: 30s, pull: 5m}}
  # An objective for start-up, with burn-rate alerts and an error-budget row on the
  # dashboard (docs/slo.md); uncomment to give every target one, or set it per target.
  # slo:
  #   objective: 99.5%     # the share of probes that must be good
  #   time_to_exec: 1s     # good: the probe succeeded and reached exec within this
  #   window: 28d          # the error budget's window: 7d, 14d, 28d or 30d
"""


def write_starter_config(args: argparse.Namespace) -> int:
    """Prints the config; exit status 0, 1 when no backend was found, 2 for bad options."""
    try:
        wanted = parse_backend_names(args.backends) if args.backends else None
    except BenchError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 2
    found, missing = discovery.discover()
    found = [t for t in found if wanted is None or t["backend"] in wanted]
    missing = {k: v for k, v in missing.items() if wanted is None or k in wanted}
    text = HEADER.format(
        schema=args.schema or SCHEMA_FILE,
        host=socket.gethostname(),
        file=args.output or "sandbox-exporter.yaml",
    )
    if found:
        text += "targets:\n" + "".join(_target(raw) for raw in found)
    else:
        text += "targets: []   # nothing was found: uncomment one below once it is there\n"
    if missing:
        text += "\n# Not found on this machine:\n" + "".join(
            _not_found(name, why) for name, why in missing.items()
        )
    if args.output:
        try:
            with open(args.output, "x", encoding="utf-8") as out:  # never overwrite a config
                out.write(text)
        except OSError as exc:
            print(f"init: --output: cannot create {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}: {len(found)} target(s)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0 if found else 1


def _target(raw: dict[str, Any]) -> str:
    kind = backends.kind(raw["backend"])
    lines = [f"  - name: {raw['name']}", f"    backend: {kind.name}   # {kind.summary}"]
    options = raw.get(kind.name) or {}
    if options:
        lines.append(f"    {kind.name}: {_flow(options)}   # found here")
    notes, settings = _image_settings(kind, options)
    lines += [f"    {key}: {value}" for key, value in settings.items()]
    lines += [f"    # {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _image_settings(kind: Any, options: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The image to probe with: the local one when it is there, else the default and
    how to do without a registry. Notes when the backend cannot be used as installed."""
    try:
        backend = kind.build(kind.options(**options), Timeouts())
    except ImportError:
        return [f"needs its SDK: pip install 'sandbox-exporter[{kind.extra}]'"], {}
    try:
        if kind.capabilities.images is not Images.EXPORTER:
            return [], {}
        try:
            present = cast(ImageStore, backend).image_present(LOCAL_IMAGE, Deadline.after(5))
        except Exception:  # noqa: BLE001 - then say how to make it
            present = False
        if present:
            return ["the probe image made here by `sandbox-exporter image build`"], {
                "image": LOCAL_IMAGE,
                "pull_policy": "never",
            }
        return [
            f"image: {DEFAULT_IMAGE} (the default) is pulled from Docker Hub; with no "
            "registry, run `sandbox-exporter image build`,",
            f"then set image: {LOCAL_IMAGE} and pull_policy: never",
        ], {}
    finally:
        backend.close()


def _not_found(name: str, why: str) -> str:
    kind = backends.kind(name)
    example = kind.options.model_validate(kind.example or {}).model_dump(mode="json")
    return (
        f"# {name}: {why}\n"
        f"#  - name: {name}\n"
        f"#    backend: {name}   # {kind.summary}\n"
        f"#    {name}: {_flow(example)}\n"
    )


def _flow(options: dict[str, Any]) -> str:
    """A mapping on one line, in YAML flow style."""
    text = yaml.safe_dump(json.loads(json.dumps(options)), default_flow_style=True, width=10**6)
    return text.strip()
