"""The emulator through the producer's real RPC client: consistent values, records, chunking, auth."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from shelly_support import JUNE_MORNING

from producers.shelly.backfill import fetch_rows
from bus.clock import EmulatedClock
from producers.shelly.emulator import EmulatedShelly
from producers.shelly.fields import MONOPHASE, TRIPHASE
from producers.shelly.rpc import AuthError, RpcError, ShellyRpc

REPO = Path(__file__).resolve().parents[2]


def test_counters_integrate_power_and_records_add_up_to_the_counters():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", clock=clock) as emu, ShellyRpc(emu.url) as rpc:
        first = rpc.call("EMData.GetStatus", {"id": 0})
        powers = []
        for _ in range(60):  # an hour, sampled every minute
            powers.append(rpc.call("EM.GetStatus", {"id": 0})["total_act_power"])
            clock.advance(60)
        last = rpc.call("EMData.GetStatus", {"id": 0})
        rows = fetch_rows(rpc, TRIPHASE, JUNE_MORNING, JUNE_MORNING + 3599)
    net = (last["total_act"] - first["total_act"]) - (last["total_act_ret"] - first["total_act_ret"])
    # minute samples of a power that changes every few seconds: the mean is close, not equal
    assert net == pytest.approx(sum(powers) / 60, rel=0.05)
    assert len(rows) == 60
    for x in "abc":
        for key in (f"{x}_total_act_energy", f"{x}_total_act_ret_energy"):
            total = float(rows.column("0", key).sum())
            assert total == pytest.approx(last[key] - first[key], abs=0.05), key
    assert last["total_act"] == pytest.approx(sum(last[f"{x}_total_act_energy"] for x in "abc"), abs=0.02)


def test_getdata_is_chunked_and_read_by_keys_in_windows_of_a_day():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="solar", clock=clock, keys_order="shuffled", data_chunk=500) as emu:
        clock.advance(3 * 86400)
        with ShellyRpc(emu.url) as rpc:
            calls: list[tuple[int, int]] = []
            real = rpc.get_data

            def spy(ns, data_id, ts, end_ts):
                calls.append((ts, end_ts))
                return real(ns, data_id, ts, end_ts)

            rpc.get_data = spy
            rows = fetch_rows(rpc, TRIPHASE, JUNE_MORNING + 600, JUNE_MORNING + 3 * 86400 - 60)
        truth = {ts: row for ts, _, row in emu.meter.records(0, None)}
    assert len(rows) == 3 * 1440 - 10
    assert all(end - ts < 86400 for ts, end in calls), "never more than a day per request"
    assert len(calls) >= 9, "each day is chunked by the device (500 records per answer)"
    for i in (0, 1234, len(rows) - 1):
        row = truth[int(rows.ts[i])]
        for key in ("a_total_act_ret_energy", "c_avg_voltage", "n_avg_current"):
            assert rows.column("0", key)[i] == row[key]


def test_monophase_records_come_per_channel_and_merge_on_time():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", profile="monophase", clock=clock) as emu:
        clock.advance(600)
        with ShellyRpc(emu.url) as rpc:
            rows = fetch_rows(rpc, MONOPHASE, JUNE_MORNING, JUNE_MORNING + 599)
            with pytest.raises(RpcError):
                rpc.call("EM.GetStatus", {"id": 0})  # no EM component in monophase
        truth = {ts: row for ts, _, row in emu.meter.records(0, None)}
    assert len(rows) == 10
    assert rows.column("2", "total_act_energy")[3] == truth[int(rows.ts[3])]["c_total_act_energy"]
    assert rows.column("0", "avg_voltage")[3] == truth[int(rows.ts[3])]["a_avg_voltage"]


def test_power_loss_makes_a_new_block_and_data_deletion_empties_the_database():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", clock=clock) as emu, ShellyRpc(emu.url) as rpc:
        clock.advance(600)
        emu.power_off()
        clock.advance(300)
        emu.power_on()
        clock.advance(630)
        blocks = rpc.get_records("EMData", 0)["data_blocks"]
        assert blocks == [{"ts": JUNE_MORNING, "period": 60, "records": 10},
                          {"ts": JUNE_MORNING + 960, "period": 60, "records": 9}]
        rpc.call("EMData.DeleteAllData", {"id": 0})
        assert rpc.get_records("EMData", 0)["data_blocks"] == []
        assert rpc.call("EMData.GetStatus", {"id": 0})["total_act"] == 0


def test_digest_auth_sha256_like_the_firmware():
    with EmulatedShelly(role="grid", password="s3cret", clock=EmulatedClock(JUNE_MORNING)) as emu:
        with ShellyRpc(emu.url) as anonymous:
            info = anonymous.device_info()  # Shelly.GetDeviceInfo stays open
            assert info["auth_en"] is True and info["auth_domain"] == emu.device_id
            with pytest.raises(AuthError):
                anonymous.status()
        before = emu.requests["Shelly.GetStatus"]
        with ShellyRpc(emu.url, password="wrong", retries=3) as wrong, pytest.raises(AuthError):
            wrong.status()
        assert emu.requests["Shelly.GetStatus"] - before == 2, "a wrong password is not retried"
        with ShellyRpc(emu.url, password="s3cret") as rpc:
            assert "em:0" in rpc.status()
            before = emu.requests["Shelly.GetStatus"]
            for _ in range(5):
                rpc.status()
            assert emu.requests["Shelly.GetStatus"] - before == 5, "the nonce is reused with a rising nc"
            emu.faults.arm("auth", 1)  # the device forgets the nonce: a new challenge, answered at once
            assert "emdata:0" in rpc.status()
        raw = httpx.get(f"{emu.url}/rpc/EM.GetStatus?id=0")
        assert raw.status_code == 401
        challenge = raw.headers["www-authenticate"]
        assert re.search(rf'realm="{emu.device_id}"', challenge) and "algorithm=SHA-256" in challenge


def test_rpc_errors_are_not_retried():
    with EmulatedShelly(clock=EmulatedClock(JUNE_MORNING)) as emu, ShellyRpc(emu.url) as rpc:
        with pytest.raises(RpcError) as err:
            rpc.call("Switch.Toggle", {"id": 0})
        assert err.value.code == 404
        with pytest.raises(RpcError):
            rpc.call("EMData.GetData", {"id": 0})  # ts is required
        assert emu.requests["Switch.Toggle"] == 1


def test_emulator_command_line_serves_and_stops_on_sigterm(tmp_path):
    (tmp_path / "pw").write_text("pw\n")
    proc = subprocess.Popen([sys.executable, "-m", "wattbus", "emulate", "shelly", "--port", "0",
                             "--role", "solar", "--profile", "monophase", "--auth-file", str(tmp_path / "pw"),
                             "--faults", "http500:0.0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, line
        with ShellyRpc(m.group(1), password="pw") as rpc:
            assert rpc.device_info()["profile"] == "monophase"
            assert "em1:2" in rpc.status()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    bad = subprocess.run([sys.executable, "-m", "wattbus", "emulate", "shelly", "--port", "0",
                          "--faults", "fire"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown fault 'fire'" in bad.stderr
    nopass = subprocess.run([sys.executable, "-m", "wattbus", "emulate", "shelly", "--port", "0",
                             "--auth-env", "WATTBUS_TEST_UNSET_VARIABLE"],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert nopass.returncode == 2 and "WATTBUS_TEST_UNSET_VARIABLE is not set" in nopass.stderr
