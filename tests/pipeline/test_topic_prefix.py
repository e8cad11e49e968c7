"""``topic_prefix`` end to end: two sites on one broker. Each site's producer, store and exporter see only
their own site's readings, every wattbus topic of a site is under its prefix, and none escapes it."""

from __future__ import annotations

import pytest

from tests.conftest import unique
from tests.pipeline.test_hhpc_to_store_and_exporter import SEED_ROWS, rows, scrape, wait_rows
from tests.support.ports import free_port
from tests.support.processes import write_config


@pytest.mark.slow
def test_two_sites_share_a_broker_through_their_prefixes(broker, processes, collector_factory, seed_sample,
                                                          tmp_path):
    house = unique("house")  # the same device name at both sites
    sites = {}
    for site, prefix in (("one", "site-one/"), ("two", "")):
        folder = tmp_path / site
        folder.mkdir()
        port = free_port()
        cfg = write_config(folder / "wattbus.toml", broker, f"""
            [producer.{house}]
            type = "hhpc"
            dataset = "{seed_sample}"
            mode = "replay"
            {'start = "2024-12-14T18:00"' if site == "two" else ""}

            [consumer.store{site}]
            type = "store"
            sink = "sqlite:///{folder / 'w.db'}"

            [consumer.exporter{site}]
            type = "exporter"
            port = {port}
            listen = "127.0.0.1"
            """, mqtt=f'topic_prefix = "{prefix}"' if prefix else "")
        sites[site] = (cfg, folder / "w.db", port)
    spy = collector_factory(broker, "#")
    for site, (cfg, _, _) in sites.items():
        for name in (f"store{site}", f"exporter{site}"):
            processes(cfg, name).wait_output("subscribed to")
    for site, (cfg, _, _) in sites.items():
        processes(cfg, house)

    one = wait_rows(sites["one"][1], house, 10)
    two = wait_rows(sites["two"][1], house, 8)  # site two replays from 18:00: 8 rows
    assert [r[0] for r in one] == [r[0] for r in SEED_ROWS], "site one stores its own ten readings once"
    assert [r[0] for r in two] == [r[0] for r in SEED_ROWS[2:]], "and nothing of site one's"
    spy.wait_for(lambda: f'device="{house}"' in scrape(sites["one"][2]), what="site one exported")
    assert scrape(sites["one"][2]).count(f'wattbus_power_watts{{device="{house}"') == 1
    ours = [t for t, _, _ in spy.messages if house in t or "storeone" in t or "exporterone" in t]
    assert f"site-one/hhpc/{house}/reading" in ours and f"hhpc/{house}/reading" in ours
    prefixed = [t for t in ours if t.startswith("site-one/")]
    assert {t.split("/", 2)[1] for t in prefixed} >= {"hhpc", "wattbus"}, "status and health are prefixed too"
    assert not [t for t in ours if "storeone" in t and not t.startswith("site-one/")]
    assert not rows(sites["two"][1], "nobody")
