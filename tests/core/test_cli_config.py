"""Bad config: exit 2, no traceback, and the message names the file, the line, the key, what is expected."""

from pathlib import Path

from tests.support.processes import run_cli

GOOD = """\
[mqtt]
host = "127.0.0.1"
port = 1883

[site]
timezone = "Europe/Brussels"

[producer.house]
type = "hhpc"
dataset = "data/hhpc-2024.txt"
role = "load"

[consumer.store]
type = "store"
sink = "sqlite:///var/lib/wattbus/wattbus.db"
"""


def check(tmp_path: Path, text: str):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text(text)
    return cfg, run_cli("-c", str(cfg), "check-config")


def test_good_config_passes(tmp_path):
    cfg, r = check(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert "house" in r.stdout and "store" in r.stdout


def test_misspelt_key_exits_2_naming_file_line_and_key(tmp_path):
    cfg, r = check(tmp_path, GOOD.replace("dataset =", "datset ="))
    assert r.returncode == 2
    assert f"{cfg}:10: producer.house.datset: unknown key; did you mean `dataset`?" in r.stderr
    assert "Traceback" not in r.stderr


def test_wrong_type_and_bad_value_are_both_reported(tmp_path):
    text = GOOD.replace("port = 1883", 'port = "1883"').replace('role = "load"', 'role = "fridge"')
    cfg, r = check(tmp_path, text)
    assert r.returncode == 2
    assert f"{cfg}:3: mqtt.port: expected `int`, got `str`" in r.stderr
    assert "producer.house.role" in r.stderr and "'load'" in r.stderr


def test_unknown_plugin_type_and_bad_timezone(tmp_path):
    text = GOOD.replace('type = "store"', 'type = "stroe"').replace("Europe/Brussels", "Europe/Atlantis")
    cfg, r = check(tmp_path, text)
    assert r.returncode == 2
    assert "consumer.store.type: unknown consumer type 'stroe'" in r.stderr
    assert "site.timezone" in r.stderr and "Europe/Atlantis" in r.stderr


def test_invalid_toml_names_the_line(tmp_path):
    cfg, r = check(tmp_path, GOOD + "\n[consumer.x\n")
    assert r.returncode == 2 and f"{cfg}:17: not valid TOML" in r.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    r = run_cli("-c", str(tmp_path / "nope.toml"), "check-config")
    assert r.returncode == 2 and "cannot read config file" in r.stderr


def test_run_with_a_bad_config_exits_2_before_connecting(tmp_path):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text(GOOD.replace("batch", "x").replace('sink =', 'snk ='))
    r = run_cli("-c", str(cfg), "run", "store", timeout=30)
    assert r.returncode == 2 and "consumer.store.snk: unknown key" in r.stderr


def test_a_sink_url_with_a_password_exits_2_without_traceback(tmp_path):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text('[mqtt]\nport = 1\n\n[consumer.st]\ntype = "store"\nsink = "mysql://u:secret@127.0.0.1:1/w"\n')
    r = run_cli("-c", str(cfg), "run", "st", timeout=30)
    assert r.returncode == 2
    assert "consumer.st.sink" in r.stderr and "password_file" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_misspelt_type_names_itself_and_suggests_type(tmp_path):
    cfg, r = check(tmp_path, GOOD.replace('type = "hhpc"', 'tpye = "hhpc"'))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{cfg}:9: producer.house.tpye: unknown key; did you mean `type`?" in r.stderr
    assert "hhpc" in r.stderr and "shelly" in r.stderr  # the types there are to choose from


def test_a_missing_type_says_which_types_exist(tmp_path):
    cfg, r = check(tmp_path, GOOD.replace('type = "hhpc"\n', ""))
    assert r.returncode == 2
    assert f"{cfg}:8: producer.house.type: missing; expected the producer type, one of hhpc, adc" in r.stderr


def test_an_unknown_type_suggests_the_nearest_one(tmp_path):
    cfg, r = check(tmp_path, GOOD.replace('type = "hhpc"', 'type = "hpcc"'))
    assert r.returncode == 2
    assert "producer.house.type: unknown producer type 'hpcc'; did you mean `hhpc`?" in r.stderr


def test_a_misspelt_table_or_top_level_key_suggests_the_right_one(tmp_path):
    cfg, r = check(tmp_path, GOOD.replace("[mqtt]", "[mqqt]"))
    assert r.returncode == 2 and "mqqt: unknown key; did you mean `mqtt`?" in r.stderr
    cfg, r = check(tmp_path, GOOD.replace("port = 1883", "prot = 1883"))
    assert r.returncode == 2 and f"{cfg}:3: mqtt.prot: unknown key; did you mean `port`?" in r.stderr


def test_an_unreadable_mqtt_password_file_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "wattbus.toml"
    nope = tmp_path / "nope"
    cfg.write_text(GOOD.replace("port = 1883", f'port = 1883\nusername = "house"\npassword_file = "{nope}"'))
    r = run_cli("-c", str(cfg), "run", "house", timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "mqtt.password_file: cannot read" in r.stderr and "nope" in r.stderr
