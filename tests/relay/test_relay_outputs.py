"""Each output kind against its device at the device's real interface: confirming, not confirming, garbage.

GPIO runs on gpiozero's MockFactory (this machine has no GPIO pins); the rest talk to the real broker and
the project's emulators (Tasmota over MQTT, the Shelly emulator over HTTP RPC with digest auth and over
MQTT RPC).
"""

from __future__ import annotations

import logging

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.config import MqttConfig as BusMqtt
from bus.mqtt import BusClient
from consumers.relay.emulator_tasmota import TasmotaDevice
from consumers.relay.outputs import OutputConfig, OutputError, open_output
from producers.shelly.emulator import EmulatedShelly
from producers.shelly.emulator_mqtt import MqttRpc
from tests.conftest import unique

LOG = logging.getLogger("test-relay-outputs")


def output(client, **cfg):
    return open_output(msgspec.convert(cfg, OutputConfig), client, LOG, unique("r"))


@pytest.fixture
def client(broker):
    c = BusClient(BusMqtt(host=broker.host, port=broker.port), unique("relay"), log=LOG)
    c.start()
    assert c.wait_connected(5)
    yield c
    c.close()


def test_tasmota_switches_and_waits_for_its_stat_confirmation(broker, client):
    topic = unique("plug")
    device = TasmotaDevice(broker.host, broker.port, topic).start()
    try:
        assert device.ready.wait(5)
        out = output(client, kind="tasmota", topic=topic, timeout=2.0)
        out.set(True)
        assert device.power == [True]
        out.set(False)
        assert device.power == [False]
        device.silent = True
        with pytest.raises(OutputError, match=rf"Tasmota {topic} ON: not confirmed after 3 attempts"):
            output(client, kind="tasmota", topic=topic, timeout=0.3, retries=2).set(True)
        assert device.commands == 2 + 3  # the silent device got every retry
    finally:
        device.stop()


def test_tasmota_multi_relay_index(broker, client):
    topic = unique("strip")
    device = TasmotaDevice(broker.host, broker.port, topic, relays=2).start()
    try:
        assert device.ready.wait(5)
        output(client, kind="tasmota", topic=topic, index=2).set(True)
        assert device.power == [False, True]
    finally:
        device.stop()


@pytest.fixture
def shelly():
    emu = EmulatedShelly(switches=1, password="s3cret pass", seed=3)
    emu.start()
    yield emu
    emu.stop()


def test_shelly_http_switch_with_digest_auth(shelly, client, tmp_path):
    pw = tmp_path / "shelly.pass"
    pw.write_text("s3cret pass\n")
    out = output(client, kind="shelly_http", url=shelly.url, password_file=str(pw))
    out.set(True)
    assert shelly.switch_on == [True]
    out.set(False)
    assert shelly.switch_on == [False]
    status = shelly.rpc("Shelly.GetStatus", {})
    assert status["switch:0"]["output"] is False


def test_shelly_http_wrong_password_is_a_clear_error(shelly, client, tmp_path):
    pw = tmp_path / "wrong.pass"
    pw.write_text("guess")
    with pytest.raises(OutputError, match="refused the password"):
        output(client, kind="shelly_http", url=shelly.url, password_file=str(pw), retries=1).set(True)
    assert shelly.switch_on == [False]


def test_shelly_http_welded_contact_is_not_confirmed(shelly, client, tmp_path):
    pw = tmp_path / "shelly.pass"
    pw.write_text("s3cret pass")
    shelly.switch_stuck = True
    with pytest.raises(OutputError, match="Switch.GetStatus says output False"):
        output(client, kind="shelly_http", url=shelly.url, password_file=str(pw), retries=1).set(True)


@pytest.mark.parametrize("fault", ["garbage", "http500", "drop"])
def test_shelly_http_garbage_and_errors_are_retried(shelly, client, tmp_path, fault):
    pw = tmp_path / "shelly.pass"
    pw.write_text("s3cret pass")
    shelly.faults.arm(fault, 2, method="Switch.Set")
    output(client, kind="shelly_http", url=shelly.url, password_file=str(pw), retries=3, timeout=1.0).set(True)
    assert shelly.switch_on == [True] and shelly.faults.injected[fault] == 2


def test_shelly_over_mqtt_rpc(broker, client):
    emu = EmulatedShelly(switches=2, seed=4)
    prefix = unique("shellypro2")
    rpc = MqttRpc(emu, broker.host, broker.port, prefix).start()
    try:
        out = output(client, kind="shelly_mqtt", prefix=prefix, switch=1)
        out.set(True)
        assert emu.switch_on == [False, True]
        rpc.silent = True
        with pytest.raises(OutputError, match="no answer on wattbus-relay-.*/rpc"):
            output(client, kind="shelly_mqtt", prefix=prefix, switch=1, timeout=0.3, retries=1).set(False)
        rpc.silent = False
        with pytest.raises(OutputError, match="not found"):  # the device's own error, passed on
            output(client, kind="shelly_mqtt", prefix=prefix, switch=5, retries=0).set(True)
    finally:
        rpc.stop()


def test_plain_mqtt_confirmed_by_its_state_topic_or_by_the_broker(broker, client, collector_factory):
    cmd, state = unique("heater") + "/set", unique("heater") + "/state"
    seen = collector_factory(broker, cmd)
    output(client, kind="mqtt", command_topic=cmd).set(True)  # no state topic: the broker's ack confirms
    seen.wait_for(lambda: seen.on(cmd), what="the command")
    assert seen.on(cmd)[-1][1] == b"ON"
    with pytest.raises(OutputError, match=f"no 'on' on {state}"):
        output(client, kind="mqtt", command_topic=cmd, state_topic=state, payload_on="on", timeout=0.3,
               retries=1).set(True)
    echo = collector_factory(broker, cmd)
    echo.client.on_message = lambda c, u, m: c.publish(state, m.payload.lower(), qos=1)
    output(client, kind="mqtt", command_topic=cmd, state_topic=state, state_on="on").set(True)


def test_gpio_on_gpiozero_mock_pins(client):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    try:
        out = output(client, kind="gpio", pin=17)
        out.set(True)
        assert Device.pin_factory.pin(17).state is True
        out.set(False)
        assert Device.pin_factory.pin(17).state is False
        out.close()
        low = output(client, kind="gpio", pin=27, active_high=False)
        low.set(True)
        assert Device.pin_factory.pin(27).state is False  # active low: on pulls the pin down
        low.close()
    finally:
        Device.pin_factory.close()
        Device.pin_factory = None


@pytest.mark.parametrize("cfg, message", [
    ({"kind": "tasmota", "topic": "cmnd/#"}, "no wildcards"),
    ({"kind": "tasmota", "topic": "ev", "index": 9}, "`index` must be 1..8"),
    ({"kind": "shelly_http", "url": "ftp://x"}, "`url`: expected http://HOST"),
    ({"kind": "shelly_http", "url": "http://10.0.0.2", "password": "inline"}, "unknown field `password`"),
    ({"kind": "gpio", "pin": 99}, "`pin` must be a BCM GPIO number"),
    ({"kind": "mqtt", "command_topic": "a/+/b"}, "no wildcards"),
    ({"kind": "mqtt", "command_topic": "a", "retries": -1}, "`retries` must be 0..20"),
    ({"kind": "relay9000"}, "Invalid value 'relay9000'"),
])
def test_bad_output_configs_say_what_is_expected(cfg, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(cfg, OutputConfig)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                 max_leaves=30).map(msgspec.json.encode),  # msgspec: integers past 64 bits too
))
def test_hostile_tasmota_answers_never_confirm_and_never_crash(broker, client, answer):
    """Whatever a broken or malicious device publishes on its stat topics, only ON confirms ON."""
    topic = unique("evil")
    out = output(client, kind="tasmota", topic=topic, timeout=0.2, retries=0)
    peer = BusClient(BusMqtt(host=broker.host, port=broker.port), unique("peer"), log=LOG)
    peer.start()
    peer.wait_connected(5)

    def reply(msg):
        peer.publish(f"stat/{topic}/POWER", answer, outside_prefix=True)
        peer.publish(f"stat/{topic}/RESULT", answer, outside_prefix=True)

    peer.subscribe(f"cmnd/{topic}/POWER", reply, outside_prefix=True)
    try:
        confirmed = True
        try:
            out.set(True)
        except OutputError:
            confirmed = False
        text = answer.decode("utf-8", "replace").strip().upper()
        assert confirmed == (text == "ON" or answer == orjson.dumps({"POWER": "ON"})
                             or _result_on(answer))
    finally:
        out.close()
        peer.close()


def _result_on(answer: bytes) -> bool:
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and isinstance(body.get("POWER"), str) and body["POWER"].upper() == "ON"
