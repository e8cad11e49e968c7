"""Device answers, hostile, at the parser level: P1 telegrams, Shelly JSON, dataset rows.

Each parser must either refuse an answer with its own error (counted and dead-lettered by the producer) or
turn it into numbers; never crash. What it turns out then goes through the producer's check
(``envelope.item_problem``), which must decide without crashing either: a value out of bounds becomes a
dead letter there, never a message.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.envelope import item_problem
from producers.hhpc.dataset import iter_rows
from producers.p1.decode import DecodeError, Decoder
from producers.p1.obis import VERSIONS
from producers.p1.reader import Framer
from producers.shelly.fields import map_status, profile_for
from tests.fuzz.hostile import hostile_value

TZ = ZoneInfo("Europe/Brussels")
TELEGRAMS = Path(__file__).resolve().parents[1] / "p1" / "telegrams"
FIXTURES = {"nl_dsmr50_iskra_mt382_v5.txt": "5", "be_fluvius_emucs_v171.txt": "5B",
            "lu_smarty_plaintext_decrypted.txt": "5L", "se_ell5_han.txt": "5S",
            "nl_dsmr22_iskra_v2_2.txt": "2.2", "de_easymeter_q3d_esy5q3da1004.txt": "Q3D"}
DECODERS = {name: Decoder(VERSIONS[v], TZ, check_crc=False) for name, v in FIXTURES.items()}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = int(time.time() * 1000)


def _check_output(metrics: dict) -> None:
    for key, value in metrics.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
    problem = item_problem(NOW, {k: float(v) for k, v in metrics.items()})
    assert problem is None or isinstance(problem, str)


@st.composite
def mutated_telegram(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(FIXTURES)))
    lines = (TELEGRAMS / name).read_bytes().decode("latin-1").split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.integers(0, 5))
        if action == 0:
            del lines[i]
        elif action == 1:
            lines.insert(i, lines[i])
        elif action == 2 and "(" in lines[i]:  # a hostile value between the parentheses
            head = lines[i].split("(", 1)[0]
            value = draw(st.sampled_from(["9" * 40, "-1", "1e308", "nan", "", "0*kWh", "x" * 500]))
            lines[i] = f"{head}({value}"
            lines[i] += draw(st.sampled_from(["*kWh)", "*kW)", ")", "*V)", ""]))
        elif action == 3:
            lines[i] = draw(st.text(max_size=60))
        elif action == 4 and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.characters()) + lines[i][j + 1:]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return name, "\r\n".join(lines)


@FUZZ
@given(mutated_telegram())
def test_p1_a_corrupt_telegram_is_refused_or_decoded_never_a_crash(sample):
    name, text = sample
    try:
        got = DECODERS[name].decode(text)
    except DecodeError as exc:
        assert exc.reason
        return
    _check_output(got.metrics)
    for sub in got.subs:
        _check_output({sub.key: sub.value})


@FUZZ
@given(st.lists(st.binary(max_size=400), max_size=8))
def test_p1_any_bytes_on_the_line_are_framed_never_a_crash(chunks):
    framer = Framer(max_buffer=2048)
    for c in chunks:
        for kind, text in framer.feed(c):
            assert isinstance(kind, str) and isinstance(text, str)
    framer.reset()


@st.composite
def shelly_status(draw) -> tuple[str, dict]:
    profile = draw(st.sampled_from(["triphase", "monophase"]))
    p = profile_for(profile)
    components: dict = {c: {} for c in p.status_components}
    for row in p.live:
        for comp, key in row.sources:
            components.setdefault(comp, {})[key] = draw(st.one_of(
                st.floats(min_value=-1e5, max_value=1e5, allow_nan=False), hostile_value))
    if draw(st.booleans()):
        components[draw(st.sampled_from(sorted(components)))]["errors"] = draw(
            st.lists(st.one_of(st.text(max_size=10), st.integers()), max_size=3))
    if draw(st.booleans()):
        comp = draw(st.sampled_from(sorted(components)))
        components[comp] = draw(st.one_of(st.none(), st.text(max_size=5),
                                          st.lists(st.integers(), max_size=3)))
    return profile, components


@FUZZ
@given(shelly_status(), st.booleans())
def test_shelly_any_status_json_maps_to_finite_numbers_never_a_crash(status, invert):
    profile, components = status
    mapped = map_status(profile_for(profile), components, invert)
    assert all(math.isfinite(v) for v in mapped.metrics.values())
    assert mapped.quality in ("ok", "missing", "estimated")
    _check_output(mapped.metrics)


HEADER = ("Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;"
          "Sub_metering_1;Sub_metering_2;Sub_metering_3\n")
cell = st.one_of(st.sampled_from(["?", "", "1e308", "-1", "nan", "inf", "0.5", "236.1", "9" * 30, "1,5"]),
                 st.text(alphabet="0123456789.-e;", max_size=8))


@st.composite
def dataset_line(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=80)).replace("\n", " ")
    day = draw(st.sampled_from(["1/1/2024", "31/12/2024", "29/2/2023", "00/13/2024", "16/12/2006", "x"]))
    clock = draw(st.sampled_from(["00:00:00", "23:59:00", "02:30:00", "24:00:00", "1:2:3", ""]))
    return ";".join([day, clock] + [draw(cell) for _ in range(draw(st.integers(5, 9)))])


@FUZZ
@given(st.lists(dataset_line(), max_size=30))
def test_dataset_any_row_is_skipped_with_a_reason_or_read_as_finite_numbers(lines):
    bad = []
    rows = list(iter_rows(io.StringIO(HEADER + "\n".join(lines) + "\n"), on_bad=bad.append))
    assert len(rows) + len(bad) <= len(lines) + 1
    assert all(b.reason for b in bad)
    for row in rows:
        if row.metrics is not None:
            assert all(math.isfinite(v) for v in row.metrics.values())
            _check_output(row.metrics)
