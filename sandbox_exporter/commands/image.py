"""`sandbox-exporter image build`: the probe image, made here, in every engine that
takes images from the exporter (see images/busybox.py for why)."""

from __future__ import annotations

import argparse
import sys
from typing import cast

from sandbox_exporter.backends.base import Deadline, Images, ImageStore
from sandbox_exporter.commands.bench import BenchError, bench_targets, parse_backend_names
from sandbox_exporter.config import ConfigError, Target, load_config
from sandbox_exporter.images.busybox import (
    IMAGE_PATH,
    ImageBuildError,
    busybox_rootfs,
    find_static_busybox,
)


def build_image(args: argparse.Namespace) -> int:
    """Exit status: 0 when every engine has the image, 1 when one failed, 2 for bad input."""
    try:
        config = load_config(args.config_file, instance=args.instance) if args.config_file else None
        names = parse_backend_names(args.backends) if args.backends else None
        targets = [
            t
            for t in bench_targets(config, names, None)
            if t.kind.capabilities.images is Images.EXPORTER
        ]
        if not targets:
            raise BenchError("-b/--backends: none of these backends takes images from the exporter")
        busybox = find_static_busybox(args.busybox)
    except ConfigError as exc:
        print(f"image build: {exc}", file=sys.stderr)
        return 1
    except (BenchError, ImageBuildError) as exc:
        print(f"image build: {exc}", file=sys.stderr)
        return 2
    rootfs = busybox_rootfs(busybox)
    failed = 0
    done: set[str] = set()
    for target in targets:
        engine = target.backend + target.options.model_dump_json()
        if engine in done:  # two targets on one engine: one import
            continue
        done.add(engine)
        problem = _import(target, rootfs, args.tag)
        if problem is None:
            print(f"{target.name}: built {args.tag} from {busybox}")
        else:
            failed += 1
            print(f"{target.name}: {problem}", file=sys.stderr)
    if not failed:
        print(f"use it with `image: {args.tag}` and `pull_policy: never`")
    return 1 if failed else 0


def _import(target: Target, rootfs: bytes, image: str) -> str | None:
    """None once `image` is in the target's engine, else why not."""
    kind = target.kind
    try:
        backend = kind.build(target.options, target.timeouts)
    except ImportError as exc:
        return f"needs a package that is not installed ({exc.name}): pip install " + (
            f"'sandbox-exporter[{kind.extra}]'"
        )
    try:
        store = cast(ImageStore, backend)
        store.import_image(rootfs, image, IMAGE_PATH, Deadline.after(target.timeouts.pull))
        if not store.image_present(image, Deadline.after(target.timeouts.create)):
            return f"the engine took the import but has no {image} after it"
    except Exception as exc:  # noqa: BLE001 - each engine's failure is its own line
        return str(exc) or type(exc).__name__
    finally:
        backend.close()
    return None
