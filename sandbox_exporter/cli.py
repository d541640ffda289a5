"""Command line: `run` (the daemon, the default), `bench`, `probe`, `gc`, `check-config`.

Every flag can also be set from the environment: `--config.file` is
`SANDBOX_EXPORTER_CONFIG_FILE`, `--web.listen-address` is
`SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS`, and so on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from sandbox_exporter import __version__, backends
from sandbox_exporter.config import Config, ConfigError, load_config, parse_config
from sandbox_exporter.config.sharding import Shard
from sandbox_exporter.images.busybox import LOCAL_IMAGE
from sandbox_exporter.logs import LEVELS, configure_logging

ENV_PREFIX = "SANDBOX_EXPORTER_"
T = TypeVar("T")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _add(
    parser: argparse.ArgumentParser,
    flag: str,
    default: str | None,
    help_text: str,
    choices: Sequence[str] | None = None,
) -> None:
    env = env_name(flag)
    parser.add_argument(
        flag,
        dest=flag.lstrip("-").replace(".", "_").replace("-", "_"),
        default=os.environ.get(env, default),
        choices=choices,
        help=f"{help_text} (env {env}; default: {default or 'none'})",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add(
        common,
        "--config.file",
        None,
        "YAML config file; without one, every backend found locally is probed",
    )
    _add(
        common,
        "--instance",
        None,
        "this exporter's identity on the engines (overrides the config's `instance`; "
        "default: the host name); stable across restarts, unique among running "
        "exporters",
    )
    _add(
        common,
        "--log.level",
        None,
        "log level (bench, probe, image, init and config, whose output is their report: "
        "warning; others: info)",
        LEVELS,
    )
    _add(common, "--log.format", "json", "log line format", ("json", "logfmt", "console"))

    parser = argparse.ArgumentParser(
        prog="sandbox-exporter",
        description="Times real sandbox lifecycles and serves them as Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"sandbox-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sharded = argparse.ArgumentParser(add_help=False)
    _add(
        sharded,
        "--shard.count",
        "1",
        "exporters splitting the config's targets (a StatefulSet's replicas); each probes "
        "the targets whose name hashes to its index, as Prometheus's hashmod does",
    )
    _add(sharded, "--shard.index", "0", "this exporter's shard, 0 to --shard.count - 1")
    run = commands.add_parser(
        "run", parents=[common, sharded], help="run the exporter (the default)"
    )
    _add(run, "--web.listen-address", ":9878", "address to serve /metrics on")
    _add(run, "--web.config.file", None, "TLS and basic auth settings (exporter-toolkit format)")
    _add(
        run,
        "--web.max-scrapes-per-second",
        "50",
        "answers to /metrics a second, at most; more clients wait their turn (0: no limit)",
    )
    _add(
        run,
        "--web.nice",
        "10",
        "niceness the web process adds to the exporter's (0-19): under CPU contention the "
        "probes, whose timings are the product, come before answering HTTP",
    )
    _add(
        run,
        "--config.auto-reload-interval",
        None,
        "re-read the config file this often when it changed, e.g. 30s",
    )
    _add(
        run,
        "--shutdown.timeout",
        None,
        "longest the shutdown may take, e.g. a pod's termination grace period less a few "
        "seconds: runs in flight are cut short in time to remove their sandboxes "
        "(default: as long as the runs in flight need)",
    )
    probe = commands.add_parser("probe", parents=[common], help="run one lifecycle of a target now")
    probe.add_argument("--target", required=True, help="the configured target's name")
    probe.add_argument("--json", action="store_true", help="the result as JSON")
    gc = commands.add_parser(
        "gc", parents=[common, sharded], help="remove this exporter's sandboxes older than max_age"
    )
    gc.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    commands.add_parser(
        "check-config", parents=[common, sharded], help="validate the config; exit 0 or 1"
    )
    init = commands.add_parser(
        "init",
        help="print a commented starter config for the backends found here",
        description="Prints a starter config for every backend found on this machine, with "
        "the addresses found, and, commented out, those not found and why. It passes "
        "check-config as written.",
    )
    init.add_argument("-b", "--backends", help="only these backends (comma-separated)")
    init.add_argument("-o", "--output", help="write it to this new file instead of stdout")
    init.add_argument(
        "--schema",
        help="the JSON Schema the first line points editors at, a URL or path "
        "(default: the copy installed with this package)",
    )
    config = commands.add_parser(
        "config", help="describe the config file: its JSON Schema or its reference"
    ).add_subparsers(dest="config_command", metavar="{schema,reference}", required=True)
    config.add_parser(
        "schema",
        help="print the config file's JSON Schema (for editors)",
        description="Prints the JSON Schema (draft-07) of the config file, generated "
        "from the models that load it. YAML-language-server editors validate a file "
        "whose first line is `# yaml-language-server: $schema=<path or URL>`; "
        "`init` writes that line.",
    )
    config.add_parser(
        "reference",
        help="print the configuration reference (Markdown)",
        description="Prints every key of the config file with its type, default and check, "
        "as Markdown: docs/reference/configuration.md.",
    )
    image = commands.add_parser(
        "image", help="make the probe image here, for engines without a registry"
    ).add_subparsers(dest="image_command", metavar="build", required=True)
    image_build = image.add_parser(
        "build",
        parents=[common],
        help="make the probe image from this machine's static busybox",
        description="Makes the probe image from this machine's static busybox (Debian: "
        "busybox-static) and imports it into the engine of every target that takes images "
        "from the exporter: the config's, else every such backend found here. No registry "
        "is needed. Then set `image: <tag>` and `pull_policy: never`.",
    )
    image_build.add_argument("--tag", default=LOCAL_IMAGE, help=f"default: {LOCAL_IMAGE}")
    image_build.add_argument("--busybox", help="a static busybox (default: busybox on PATH)")
    image_build.add_argument(
        "-b", "--backends", help="comma-separated backend names (default: every one found)"
    )
    kinds = backends.kinds()
    remote = [k.name for k in kinds if k.capabilities.remote]
    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="time N lifecycles per backend now and print p50/p95",
        description="Runs the daemon's lifecycle N times per backend, one backend after "
        "another, and prints p50/p95 per phase (nearest-rank). Without -b: every backend "
        f"found on this machine ({', '.join(remote)} only when named).",
    )
    bench.add_argument(
        "-b",
        "--backends",
        help="comma-separated backend names: "
        + ", ".join(k.name + (f" ({', '.join(k.aliases)})" if k.aliases else "") for k in kinds),
    )
    bench.add_argument("-i", "--iterations", type=_count(1), default=10, help="default: 10")
    bench.add_argument(
        "--warmup", type=_count(0), default=1, help="uncounted runs first; default: 1"
    )
    bench.add_argument(
        "--concurrency",
        type=_count(2),
        help="each iteration is one burst of this many sandboxes per backend, launched "
        "together by the daemon's burst runner; -i counts bursts",
    )
    bench.add_argument(
        "--stagger",
        help="with --concurrency: launch the burst's sandboxes this far apart, e.g. 200ms",
    )
    bench.add_argument("--image", help="image to probe (default: the config's, else busybox:1.36)")
    bench.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="every sample and the summaries as JSON (machine, settings and versions too): "
        "on stdout, or into FILE (then the table, or the comparison, on stdout)",
    )
    bench.add_argument("--output", help="write the table (or JSON) to this file instead of stdout")
    bench.add_argument(
        "--baseline",
        metavar="OLD.json",
        help="then compare this run with an earlier `bench --json` report: a verdict per "
        "backend and series, exit 3 when something is slower or fails more often "
        "(needs the bench extra: scipy). `bench compare OLD.json NEW.json` compares two "
        "saved reports without running anything",
    )
    bench.add_argument(
        "--ab",
        metavar="A,B",
        help="two targets (of the config, or backends) measured in alternating blocks in "
        "one run, so that the machine's drift meets both alike; B is then compared with A "
        "as by --baseline (exit 3 when B is slower or fails more often)",
    )
    bench.add_argument(
        "--block",
        type=_count(1),
        default=5,
        help="with --ab: iterations of one side before switching to the other (default: 5)",
    )
    _comparison_options(bench)
    return parser


def _comparison_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        default="10%",
        help="slower only when the median's 95%% interval lies wholly above this (default: 10%%)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "markdown", "json"),
        default="table",
        help="the comparison as a table, Markdown (for a pull request) or JSON",
    )


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox-exporter bench compare",
        description="Compares two `bench --json` reports without running anything: per "
        "backend and series, the medians, the p95s, the median's change with its 95% "
        "interval and a verdict (faster, same, slower), and the failure rates. Exit "
        "status 0, or 3 when something is slower or fails more often; 2 for bad input.",
    )
    parser.add_argument("old", metavar="OLD.json")
    parser.add_argument("new", metavar="NEW.json")
    _comparison_options(parser)
    return parser


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, "run")
    if args_list[:2] == ["bench", "compare"]:
        from sandbox_exporter.commands.bench_gate import compare_files

        return compare_files(build_compare_parser().parse_args(args_list[2:]))
    args = build_parser().parse_args(args_list)
    # their report is the output
    quiet = args.command in ("bench", "probe", "image", "init", "config")
    configure_logging(
        getattr(args, "log_level", None) or ("warning" if quiet else "info"),
        getattr(args, "log_format", "json"),
    )
    if args.command == "bench":
        from sandbox_exporter.commands.bench_cli import bench

        return bench(args)
    if args.command == "init":
        from sandbox_exporter.commands.init import write_starter_config

        return write_starter_config(args)
    if args.command == "config":
        if args.config_command == "schema":
            from sandbox_exporter.config.schema import render as render_schema

            sys.stdout.write(render_schema())
        else:
            from sandbox_exporter.config.reference import render as render_reference

            sys.stdout.write(render_reference())
        return 0
    if args.command == "image":
        from sandbox_exporter.commands.image import build_image

        return build_image(args)
    try:
        shard = _shard(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        whole = load_or_discover(args.config_file, args.instance)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    config = shard.of(whole)
    if args.command == "check-config":
        print(f"{config.source}: OK, {len(whole.targets)} target(s), instance {config.instance}")
        for target in whole.targets:
            mine = "" if shard.owns(target.name) else f" (not in {shard})"
            burst = target.burst
            bursts = (
                f", bursts of {burst.concurrency} ({burst.mode}) every {burst.interval:g}s"
                if burst
                else ""
            )
            print(
                f"  {target.name}: backend {target.backend}, every {target.interval:g}s"
                f"{bursts}{mine}"
            )
            if target.slo is not None:
                print(f"    slo: {target.slo.describe()}")
        return 0
    if args.command == "probe":
        from sandbox_exporter.commands.probe import probe_once

        return probe_once(config, args.target, as_json=args.json)
    if args.command == "gc":
        from sandbox_exporter.commands.gc import collect_garbage

        return collect_garbage(config, dry_run=args.dry_run)
    return _run(config, args, shard)


def _shard(args: argparse.Namespace) -> Shard:
    """--shard.index and --shard.count (commands without them: the one shard)."""
    if not hasattr(args, "shard_count"):
        return Shard()
    count = _flag("--shard.count", args.shard_count, _whole)
    index = _flag("--shard.index", args.shard_index, _whole)
    return Shard(index, count)


def _whole(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def load_or_discover(path: str | None, instance: str | None = None) -> Config:
    if path:
        return load_config(path, instance=instance)
    return parse_config({"targets": "auto"}, instance=instance)


class FlagError(ValueError):
    """A bad flag value; the message names the flag."""

    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(f"{flag}: {problem}")


def _flag(flag: str, text: str, parse: Callable[[str], T]) -> T:
    """`parse(text)`, its ValueError a FlagError naming `flag`."""
    try:
        return parse(text)
    except ValueError as exc:
        raise FlagError(flag, str(exc)) from None


def _niceness(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 19:
        raise ValueError(f"expected a whole number from 0 to 19, got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"expected a number, 0 or more, got {text!r}")
    return value


def _run(config: Config, args: argparse.Namespace, shard: Shard) -> int:
    from sandbox_exporter.config.durations import parse_duration
    from sandbox_exporter.daemon import Daemon
    from sandbox_exporter.malloc_arenas import cap_malloc_arenas
    from sandbox_exporter.web.app import parse_listen_address
    from sandbox_exporter.web.serving import ServingOptions
    from sandbox_exporter.web.webconfig import WebConfig, WebConfigError

    listen_address = args.web_listen_address
    try:
        _flag("--web.listen-address", listen_address, parse_listen_address)
        nice = _flag("--web.nice", args.web_nice, _niceness)
        scrapes = _flag("--web.max-scrapes-per-second", args.web_max_scrapes_per_second, _rate)
        auto_reload = shutdown_timeout = None
        if args.config_auto_reload_interval:
            auto_reload = _flag(
                "--config.auto-reload-interval", args.config_auto_reload_interval, parse_duration
            )
            if not args.config_file:
                raise FlagError("--config.auto-reload-interval", "needs --config.file")
        if args.shutdown_timeout:
            shutdown_timeout = _flag("--shutdown.timeout", args.shutdown_timeout, parse_duration)
        try:
            web_config = WebConfig(args.web_config_file) if args.web_config_file else None
        except WebConfigError as exc:
            raise FlagError("--web.config.file", str(exc)) from None
    except FlagError as exc:
        print(exc, file=sys.stderr)
        return 1
    path = args.config_file
    # before the daemon's threads start: see malloc_arenas.py
    structlog.get_logger("sandbox_exporter").info("malloc arenas", arenas=cap_malloc_arenas())
    try:
        daemon = Daemon(
            config,
            listen_address=listen_address,
            loader=(lambda: shard.of(load_config(path, instance=args.instance))) if path else None,
            web_config=web_config,
            serving=ServingOptions(nice=nice, scrapes_per_second=scrapes),
        )
    except OSError as exc:
        print(f"--web.listen-address: cannot listen on {listen_address}: {exc}", file=sys.stderr)
        return 1
    return daemon.run_until_signal(
        auto_reload_interval=auto_reload, shutdown_timeout=shutdown_timeout
    )
