"""A meter sending every second becomes one reading per interval: counters latest, power averaged."""

from __future__ import annotations

import pytest

from producers.p1.throttle import Throttle

T0 = 1_700_000_000_000  # a multiple of 10 s


def sample(n: int) -> dict[str, float]:
    return {"power_w": 100.0 * n, "voltage_l1_v": 230.0 + n, "energy_import_wh": 1000.0 + n, "tariff": 1.0}


def test_one_reading_per_aligned_interval_with_mean_power_and_latest_counters():
    th = Throttle(10, "mean")
    out = [r for n in range(0, 31) if (r := th.add(T0 + 1000 * n, sample(n)))]
    assert [r.ts for r in out] == [T0, T0 + 10_000, T0 + 20_000, T0 + 30_000]
    second = out[1]
    assert second.metrics["power_w"] == pytest.approx(sum(100.0 * n for n in range(1, 11)) / 10)
    assert second.metrics["voltage_l1_v"] == pytest.approx(235.5)
    assert second.metrics["energy_import_wh"] == 1010.0
    assert second.period_s == 10
    assert out[0].period_s == 0  # nothing before it to average over


def test_latest_mode_publishes_the_telegram_as_is():
    th = Throttle(10, "latest")
    out = [r for n in range(0, 21) if (r := th.add(T0 + 1000 * n, sample(n)))]
    assert out[1].metrics == sample(10) and out[1].period_s == 0


def test_a_meter_slower_than_the_interval_publishes_every_telegram():
    th = Throttle(5, "mean")
    out = [th.add(T0 + 3000 + 10_000 * n, sample(n)) for n in range(4)]
    assert all(r is not None for r in out)
    assert [r.metrics["power_w"] for r in out] == [0, 100, 200, 300]


def test_interval_zero_publishes_every_telegram_but_never_the_same_timestamp_twice():
    th = Throttle(0, "mean")
    assert th.add(T0, sample(1)) is not None
    assert th.add(T0, sample(1)) is None          # the same telegram again
    assert th.add(T0 + 1000, sample(2)) is not None


def test_flush_publishes_what_was_not_yet_published_and_the_next_telegram_goes_out_at_once():
    th = Throttle(10, "mean")
    for n in range(0, 5):
        th.add(T0 + 1000 * n, sample(n))
    tail = th.flush()
    assert tail.ts == T0 + 4000 and tail.metrics["energy_import_wh"] == 1004
    assert th.flush() is None
    assert th.add(T0 + 60_000 + 3000, sample(9)) is not None   # after a reconnect: not held back
