"""``wattbus export``: stored readings of one device and time range as JSONL or CSV, from any sink."""

from __future__ import annotations

import csv
import sys
from datetime import datetime

import orjson

from bus.config import AppConfig
from bus.envelope import to_dict
from schemas import METRICS
from wattbus.plugins import plugin


def parse_time(text: str, tz) -> int:
    """Epoch ms from epoch-ms digits or an ISO date/time (naive = site timezone)."""
    if text.isdigit():
        return int(text)
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return int(t.timestamp() * 1000)


def readings_sinks(app: AppConfig) -> dict[str, str]:
    """Consumer name -> sink URL, for every configured consumer whose plugin stores readings."""
    out = {}
    for name, cfg in app.consumers.items():
        p = plugin("consumer", cfg.type)
        if p is not None and p.readings_sink is not None:
            out[name] = p.readings_sink(cfg)
    return out


def run_export(args, load) -> int:
    from bus.sinks.base import open_sink
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("UTC")
    url = args.sink
    if url is None:
        app = load(args)
        tz = app.tz
        stores = readings_sinks(app)
        if args.store:
            if args.store not in stores:
                print(f"wattbus export: no consumer named {args.store!r} stores readings "
                      f"(these do: {', '.join(stores) or 'none'})", file=sys.stderr)
                return 2
            url = stores[args.store]
        elif stores:
            url = next(iter(stores.values()))
        else:
            print("wattbus export: no consumer in the config stores readings; give --sink URL",
                  file=sys.stderr)
            return 2
    try:
        start, end = parse_time(args.start, tz), parse_time(args.end, tz)
    except ValueError as exc:
        print(f"wattbus export: --from/--to: {exc} (expected ISO date/time or epoch ms)", file=sys.stderr)
        return 2
    sink = open_sink(url)
    out = sys.stdout
    try:
        if args.format == "jsonl":
            for r in sink.read(args.source, args.device, start, end):
                out.buffer.write(orjson.dumps(to_dict(r)) + b"\n")
        else:
            w = csv.writer(out)
            w.writerow(["source", "device", "ts", "time_utc", "seq", "period_s", "quality", *METRICS])
            for r in sink.read(args.source, args.device, start, end):
                iso = datetime.utcfromtimestamp(r.ts / 1000).isoformat(timespec="milliseconds") + "Z"
                w.writerow([r.source, r.device, r.ts, iso, r.seq, r.period_s, r.quality,
                            *(r.metrics.get(k, "") for k in METRICS)])
    finally:
        sink.close()
    return 0
