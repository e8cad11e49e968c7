"""``wattbus demo``: the whole pipeline on embedded defaults and simulated hardware, no config needed.

Makes the demo dataset if it is missing, starts a Mosquitto with the project's config when nothing listens
on the MQTT port, writes the demo config next to the data, and runs every process as ``wattbus up`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bus.config import load_config
from wattbus.broker import Broker, port_open
from wattbus.plugins import resolve
from wattbus.progress import Progress
from wattbus.supervisor import supervise

DEMO_CONFIG = """\
# Written by `wattbus demo`. Copy it as a starting point for your own wattbus.toml.
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[site]
timezone = "Europe/Brussels"

# The seed's household, live: every minute, the dataset row for this day-of-year and minute.
[producer.house]
type = "hhpc"
dataset = "{dataset}"
mode = "live"
interval = 60

# The same year replayed at an hour per second, over and over: a busy device to watch.
[producer.replay]
type = "hhpc"
dataset = "{dataset}"
mode = "replay"
speed = 3600
batch = 60
repeat = true

# Simulated meters with daily profiles, solar and an EV, at 60x real time.
[producer.meters]
type = "sim"
interval = 300
speed = 60
[[producer.meters.meters]]
serial = "kili"
daily_kwh = 9.0
solar_kwp = 4.0
ev_kw = 7.4
[[producer.meters.meters]]
serial = "pico"
upload = "daily"
daily_kwh = 6.5

[consumer.store]
type = "store"
sink = "sqlite:///{db}"

[consumer.exporter]
type = "exporter"
port = 3030
compat = "hhpc"
compat_device = "house"
"""


def run_demo(args) -> int:
    data = Path(args.dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    dataset = data / "hhpc-2024.txt"
    if not dataset.exists():
        from producers.hhpc.generate import generate_year

        tmp = dataset.with_suffix(".part")
        with Progress("demo dataset: generating 2024", unit="rows") as bar:
            generate_year(2024, tmp, seed=0, progress=bar.update)
        tmp.rename(dataset)
    broker = None
    if not port_open(args.mqtt_port):
        broker = Broker(data / "mosquitto", port=args.mqtt_port).start()
        print(f"started mosquitto on 127.0.0.1:{args.mqtt_port} with mosquitto/mosquitto.dev.conf",
              file=sys.stderr)
    else:
        print(f"using the MQTT broker already listening on 127.0.0.1:{args.mqtt_port}", file=sys.stderr)
    cfg = data / "wattbus.toml"
    cfg.write_text(DEMO_CONFIG.format(mqtt_port=args.mqtt_port, dataset=dataset, db=data / "wattbus.db"))
    app = load_config(cfg, resolve)
    print(f"""
wattbus demo is running ({cfg}). Open:
  http://localhost:3030/          the Prometheus exporter (/metrics)
Watch the bus:   mosquitto_sub -p {args.mqtt_port} -t '#' -v
Read the store:  .venv/bin/wattbus -c {cfg} export --source hhpc --device replay --from 2024-01-01 --to 2024-01-02
Ctrl-C stops everything.
""", file=sys.stderr)
    try:
        return supervise(app)
    finally:
        if broker:
            broker.stop()
