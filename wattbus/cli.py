"""The ``wattbus`` command. Config errors exit with status 2 and a message naming file, line and key."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from bus.config import AppConfig, ConfigError, find_config, load_config

EXIT_CONFIG = 2


def _load(args: argparse.Namespace) -> AppConfig:
    from wattbus.plugins import resolve

    return load_config(find_config(args.config), resolve)


def cmd_run(args: argparse.Namespace) -> int:
    from wattbus.process import run_process

    app = _load(args)
    app.process(args.name)
    return run_process(app, args.name, args.instance or "")


def cmd_up(args: argparse.Namespace) -> int:
    from wattbus.supervisor import supervise

    app = _load(args)
    return supervise(app, only=args.names)


def cmd_check(args: argparse.Namespace) -> int:
    app = _load(args)
    app.check_secrets()
    print(f"{app.path}: OK ({len(app.producers)} producers: {', '.join(app.producers) or '-'}; "
          f"{len(app.consumers)} consumers: {', '.join(app.consumers) or '-'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from wattbus.demo import run_demo

    return run_demo(args)


def cmd_export(args: argparse.Namespace) -> int:
    from wattbus.export import run_export

    return run_export(args, _load if not args.sink else None)


def _delegate(module: str, func: str = "main") -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), func)(args.rest)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus", description="Home-energy monitoring over MQTT.")
    p.add_argument("-c", "--config", help="config file (default: $WATTBUS_CONFIG, ./wattbus.toml, "
                                          "/etc/wattbus/wattbus.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="run one configured process in the foreground (systemd: wattbus@NAME)")
    s.add_argument("name")
    s.add_argument("--instance", help="copy id when several copies share a $share group")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("up", help="start every configured process, restart any that dies, stop all on Ctrl-C")
    s.add_argument("names", nargs="*", help="only these processes")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("demo", help="every plugin on emulated hardware, no config needed")
    s.add_argument("--dir", default="demo-data", help="where the demo keeps its config, data and database")
    s.add_argument("--mqtt-port", type=int, default=1883, help="broker port (one is started if none listens)")
    s.add_argument("--free-ports", action="store_true",
                   help="free loopback ports for everything, its own broker too (1883, 3030, ... left alone)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("check-config", help="validate the config file; exit 2 naming every bad key")
    s.set_defaults(func=cmd_check)

    from wattbus import acl

    acl.add_parser(sub)

    s = sub.add_parser("export", help="print stored readings as JSONL or CSV")
    s.add_argument("--source", required=True)
    s.add_argument("--device", required=True)
    s.add_argument("--from", dest="start", required=True, help="ISO date/time (site timezone) or epoch ms")
    s.add_argument("--to", dest="end", required=True,
                   help="ISO date/time (site timezone) or epoch ms; exclusive")
    s.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    s.add_argument("--sink", help="sink URL (default: the sink of the first consumer that stores readings)")
    s.add_argument("--store", help="which consumer's sink to read (by process name)")
    s.add_argument("--period", choices=("15m", "1h", "1d", "1w", "1mo", "1y"),
                   help="print the aggregate's buckets of this period instead of readings (source site: the balance)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", help="a plugin's benchmark: replay (hhpc), adc, ... (prints figures)")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=_delegate("wattbus.bench"))

    s = sub.add_parser("calibrate", help="measure against a reference meter, write the new calibration (adc)")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=lambda args: importlib.import_module("wattbus.calibrate").main(args.config,
                                                                                        args.rest))

    s = sub.add_parser("emulate", help="a plugin's device emulator: shelly, p1, hhpc (a dataset year), ...")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=_delegate("wattbus.emulate"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print("wattbus: configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
