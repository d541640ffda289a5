"""Command line: `run` (the daemon, the default) and `check-config`.

Every flag can also be set from the environment: `--config.file` is
`SANDBOX_EXPORTER_CONFIG_FILE`, `--web.listen-address` is
`SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS`, and so on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from exporter import __version__
from exporter.config import Config, ConfigError, load_config, parse_config
from exporter.logs import LEVELS, configure_logging

ENV_PREFIX = "SANDBOX_EXPORTER_"
COMMANDS = ("run", "check-config")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _add(parser: argparse.ArgumentParser, flag: str, default: str | None, help_text: str,
         choices: Sequence[str] | None = None) -> None:  # fmt: skip
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
    _add(common, "--config.file", None,
         "YAML config file; without one, every backend found locally is probed")  # fmt: skip
    _add(common, "--log.level", "info", "log level", LEVELS)
    _add(common, "--log.format", "json", "log line format", ("json", "logfmt", "console"))

    parser = argparse.ArgumentParser(
        prog="sandbox-exporter",
        description="Times real sandbox lifecycles and serves them as Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"sandbox-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the exporter (the default)")
    _add(run, "--web.listen-address", ":9878", "address to serve /metrics on")
    commands.add_parser("check-config", parents=[common], help="validate the config; exit 0 or 1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, "run")
    args = build_parser().parse_args(args_list)
    configure_logging(args.log_level, args.log_format)
    try:
        config = _load(args.config_file)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    if args.command == "check-config":
        print(f"{config.source}: OK, {len(config.targets)} target(s)")
        for target in config.targets:
            print(f"  {target.name}: backend {target.backend}, every {target.interval:g}s")
        return 0
    return _run(config, args.web_listen_address)


def _load(path: str | None) -> Config:
    if path:
        return load_config(path)
    return parse_config({"targets": "auto"})


def _run(config: Config, listen_address: str) -> int:
    from exporter.daemon import Daemon
    from exporter.server import parse_listen_address

    try:
        parse_listen_address(listen_address)
    except ValueError as exc:
        print(f"--web.listen-address: {exc}", file=sys.stderr)
        return 1
    try:
        daemon = Daemon(config, listen_address=listen_address)
    except OSError as exc:
        print(f"--web.listen-address: cannot listen on {listen_address}: {exc}", file=sys.stderr)
        return 1
    return daemon.run_until_signal()
