"""Hostile input to the adc producer (hypothesis): whatever the SPI device answers and however the host's
clock behaves, the maths gives finite numbers (or says the window is not clean) and never crashes; a device
answering with replies of the wrong length is an SPI error, counted like a failed transfer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bus.clock import EmulatedClock
from bus.envelope import item_problem
from producers.adc.chips import CHIPS
from producers.adc.power import analyse
from producers.adc.sampler import Sampler

FUZZ = settings(max_examples=150, deadline=None)


@st.composite
def window(draw):
    chip = CHIPS[draw(st.sampled_from(list(CHIPS)))]
    slots = draw(st.integers(1, 4))
    steps = draw(st.integers(3, 400))
    kind = draw(st.sampled_from(["random", "constant", "rails", "sine"]))
    if kind == "random":
        codes = draw(arrays(np.int16, (slots, steps), elements=st.integers(0, chip.full_scale)))
    elif kind == "constant":
        codes = np.full((slots, steps), draw(st.integers(0, chip.full_scale)), dtype=np.int16)
    elif kind == "rails":
        codes = (np.arange(slots * steps).reshape(slots, steps) % 2 * chip.full_scale).astype(np.int16)
    else:
        n = np.arange(steps)
        amp = draw(st.floats(0, chip.counts))
        codes = np.clip(chip.counts / 2 + amp * np.sin(2 * np.pi * n / draw(st.floats(2.0, 200.0))), 0,
                        chip.full_scale).astype(np.int16)[None, :].repeat(slots, axis=0)
    gaps = draw(arrays(np.float64, (steps,), elements=st.sampled_from([0.0, 1e-9, 20e-6, 333e-6, 5e-3, 0.3])))
    t0 = np.cumsum(gaps)
    times = t0[None, :] + np.arange(slots)[:, None] * draw(st.sampled_from([0.0, 20e-6]))
    took = draw(st.one_of(st.none(), arrays(np.float64, (slots, steps),
                                            elements=st.sampled_from([0.0, 3e-6, 50e-6, 5e-3]))))
    return chip, codes, times, took


@FUZZ
@given(window(), st.booleans(), st.floats(-30, 30), st.sampled_from([50.0, 60.0]))
def test_any_window_gives_finite_numbers(w, has_voltage, phase, hz):
    chip, codes, times, took = w
    slots = codes.shape[0]
    if has_voltage and slots < 2:
        has_voltage = False
    n_i = slots - (1 if has_voltage else 0)
    a = analyse(codes, times, took_s=took, has_voltage=has_voltage, v_ratio=0.19, i_ratios=[0.07] * n_i,
                phase_deg=[phase] * n_i, nominal_hz=hz, full_scale=chip.full_scale)
    assert np.all(np.isfinite(a.irms)) and isinstance(a.clean, bool)
    if has_voltage:
        assert math.isfinite(a.vrms) and np.all(np.isfinite(a.real_power))
        assert a.frequency_hz is None or 0.5 * hz <= a.frequency_hz <= 2 * hz
        metrics = {"voltage_v": a.vrms, "power_w": float(a.real_power.sum()),
                   "current_a": float(a.irms.sum())}
        assert item_problem(1_700_000_000_000, metrics) is None


class _Hostile:
    """An SPI device whose replies are whatever hypothesis draws (a broken chip, a miswired bus)."""

    mode, max_speed_hz = 0, 1_000_000

    def __init__(self, replies):
        self.replies, self.clock = iter(replies), EmulatedClock(start=0.0, speed=0.0)

    def xfer2(self, data):
        return next(self.replies, [0xFF, 0xFF, 0xFF])


@FUZZ
@given(st.lists(st.one_of(st.lists(st.integers(0, 255), min_size=3, max_size=3),
                          st.lists(st.integers(0, 255), max_size=6)), min_size=1, max_size=60),
       st.sampled_from(list(CHIPS)))
def test_any_spi_reply_is_a_code_in_range_or_an_spi_error(replies, chip):
    adc = Sampler(_Hostile(replies), chip)
    try:
        w = adc.sample([0, 1], 30, 333_333)
    except OSError as exc:
        assert exc.errno == 5 and any(len(r) != 3 for r in replies[:60])
        return
    assert w.codes.min() >= 0 and w.codes.max() <= CHIPS[chip].full_scale


def test_a_reply_of_the_wrong_length_counts_as_a_failed_transfer():
    adc = Sampler(_Hostile([[0x00, 0x0F]] * 60), "mcp3208")
    with pytest.raises(OSError, match="unexpected length"):
        adc.sample([0, 1], 30, 333_333)
