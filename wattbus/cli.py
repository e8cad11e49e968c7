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
    print(f"{app.path}: OK ({len(app.producers)} producers: {', '.join(app.producers) or '-'}; "
          f"{len(app.consumers)} consumers: {', '.join(app.consumers) or '-'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from wattbus.demo import run_demo

    return run_demo(args)


def cmd_export(args: argparse.Namespace) -> int:
    from wattbus.export import run_export

    return run_export(args, _load if not args.sink else None)


def cmd_dataset(args: argparse.Namespace) -> int:
    from wattbus.progress import Progress
    from producers.hhpc.generate import generate_year

    with Progress(f"generating {args.year}", unit="rows") as bar:
        n = generate_year(args.year, args.out, seed=args.seed, progress=bar.update)
    print(f"wrote {n} rows to {args.out}")
    return 0


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

    s = sub.add_parser("demo", help="the whole pipeline on simulated hardware, no config needed")
    s.add_argument("--dir", default="demo-data", help="where the demo keeps its dataset and database")
    s.add_argument("--mqtt-port", type=int, default=1883)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("check-config", help="validate the config file; exit 2 naming every bad key")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("export", help="print stored readings as JSONL or CSV")
    s.add_argument("--source", required=True)
    s.add_argument("--device", required=True)
    s.add_argument("--from", dest="start", required=True, help="ISO date/time (site timezone) or epoch ms")
    s.add_argument("--to", dest="end", required=True, help="ISO date/time (site timezone) or epoch ms; exclusive")
    s.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    s.add_argument("--sink", help="sink URL (default: the first store consumer's sink in the config)")
    s.add_argument("--store", help="which store consumer's sink to read")
    s.add_argument("--period", choices=("15m", "1h", "1d", "1w", "1mo", "1y"),
                   help="print the aggregate's buckets of this period instead of readings (source site: the balance)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("dataset", help="household power consumption dataset tools")
    dsub = s.add_subparsers(dest="dataset_command", required=True)
    g = dsub.add_parser("generate", help="write a synthetic year, one row per minute")
    g.add_argument("--year", type=int, default=2024)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_dataset)

    s = sub.add_parser("bench", help="benchmarks: replay | adc (prints figures)")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=_delegate("wattbus.bench"))

    s = sub.add_parser("emulate", help="device emulators: shelly | p1")
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
