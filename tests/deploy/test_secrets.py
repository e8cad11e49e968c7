"""A process's broker login: its own name and password file, and a secret it cannot read is a config error.

Under systemd a traceback at start means a restart loop; a config error (exit 2, file, line, key, what is
wrong) stops the unit (RestartPreventExitStatus=2) with the reason in `journalctl -u wattbus@NAME`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.config import ConfigError, MqttConfig, parse_config
from tests.deploy.support import MAKE_USER
from tests.support.processes import run_cli
from wattbus.plugins import resolve

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "wattbus.toml"
    path.write_text(f"""\
[mqtt]
host = "127.0.0.1"
port = 1
{mqtt}

[producer.meters]
type = "sim"

[consumer.store_sql]
type = "store"
sink = "sqlite:///{tmp_path}/w.db"
""")
    return path


def test_each_process_logs_in_as_itself_with_its_own_password_file():
    m = MqttConfig(password_file="/etc/wattbus/mqtt/{process}.pass")
    store = m.for_process("store_sql")
    assert (store.username, store.password_file) == ("store_sql", "/etc/wattbus/mqtt/store_sql.pass")
    assert MqttConfig().for_process("house").username == "house"
    assert MqttConfig(username="site-{process}").for_process("house").username == "site-house"
    assert MqttConfig(username="shared").for_process("house").username == "shared"  # an explicit name wins


def test_the_units_credential_wins_over_the_config(monkeypatch, tmp_path):
    monkeypatch.setenv("WATTBUS_MQTT_PASSWORD_FILE", str(tmp_path / "creds" / "mqtt.pass"))
    m = MqttConfig(password_file="/etc/wattbus/mqtt/{process}.pass").for_process("store")
    assert m.password_file == str(tmp_path / "creds" / "mqtt.pass")


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "not utf-8"])
def test_unusable_password_file_is_a_config_error_from_check_config_and_run(tmp_path, case):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    target = secrets / "meters.pass"
    if case == "directory":
        target.mkdir()
    elif case == "empty":
        target.write_text("\n")
    elif case == "not utf-8":
        target.write_bytes(b"\xff\xfe\x00pass")
    (secrets / "store_sql.pass").write_text("fine\n")
    cfg = config(tmp_path, f'password_file = "{secrets}/{{process}}.pass"')

    check = run_cli("-c", str(cfg), "check-config")
    assert check.returncode == 2, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
    assert f"{cfg}:4: mqtt.password_file:" in check.stderr  # file, line, key
    assert str(target) in check.stderr and "(process meters)" in check.stderr
    assert "store_sql" not in check.stderr  # only the process whose secret is bad

    started = time.monotonic()
    run = run_cli("-c", str(cfg), "run", "meters", timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert str(target) in run.stderr
    assert time.monotonic() - started < 30  # it stops, it does not retry forever


def test_a_secret_readable_only_by_root_is_a_config_error_for_others(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file: permission errors can only be shown by a normal user")
    secret = tmp_path / "meters.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0)
    cfg = config(tmp_path, f'password_file = "{tmp_path}/{{process}}.pass"')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "Permission denied" in r.stderr, r.stderr


def test_a_missing_unit_credential_is_a_config_error_naming_it(tmp_path):
    (tmp_path / "meters.pass").write_text("x\n")
    cfg = config(tmp_path, f'password_file = "{tmp_path}/{{process}}.pass"')
    env = dict(os.environ, PYTHONPATH=str(REPO),
               WATTBUS_MQTT_PASSWORD_FILE=str(tmp_path / "nowhere/mqtt.pass"))
    r = subprocess.run([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", "meters"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and str(tmp_path / "nowhere/mqtt.pass") in r.stderr, r.stderr


def test_check_config_passes_when_every_process_has_its_secret(tmp_path):
    for name in ("meters", "store_sql"):
        (tmp_path / f"{name}.pass").write_text("s3cret\n")
    cfg = config(tmp_path, f'password_file = "{tmp_path}/{{process}}.pass"')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 0, r.stderr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=4096))
def test_any_password_file_content_is_a_login_or_a_config_error(tmp_path, content):
    secret = tmp_path / "meters.pass"
    secret.write_bytes(content)
    text = f'[mqtt]\npassword_file = "{tmp_path}/{{process}}.pass"\n[producer.meters]\ntype = "sim"\n'
    app = parse_config(text, tmp_path / "w.toml", resolve)
    try:
        mqtt = app.mqtt_for("meters")
    except ConfigError as exc:
        assert exc.problems and "mqtt.password_file" in exc.problems[0]
    else:
        assert mqtt.password() == content.decode("utf-8").strip() != ""


def test_make_user_never_puts_the_password_on_a_command_line(tmp_path):
    """A mosquitto_passwd in front of the real one records its argv: the password must not be in it."""
    real = shutil.which("mosquitto_passwd")
    assert real, "mosquitto_passwd missing: ./run test installs mosquitto"
    shim = tmp_path / "bin" / "mosquitto_passwd"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path}/argv.log\nexec {real} "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}")
    r = subprocess.run(["sh", str(MAKE_USER), "store", str(tmp_path / "passwd"), str(tmp_path / "secrets")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    password = (tmp_path / "secrets/store.pass").read_text().strip()
    assert len(password) >= 32
    argv = (tmp_path / "argv.log").read_text()
    assert "store" in argv and password not in argv
    assert oct((tmp_path / "secrets/store.pass").stat().st_mode & 0o777) == "0o600"
    # --keep hashes the same password again (an install re-run), without --keep a new one is made (rotation)
    first = (tmp_path / "passwd").read_text()
    subprocess.run(["sh", str(MAKE_USER), "--keep", "store", str(tmp_path / "passwd"),
                    str(tmp_path / "secrets")], check=True, capture_output=True, env=env)
    assert (tmp_path / "secrets/store.pass").read_text().strip() == password
    assert (tmp_path / "passwd").read_text() != first  # new salt, same password
    subprocess.run(["sh", str(MAKE_USER), "store", str(tmp_path / "passwd"), str(tmp_path / "secrets")],
                   check=True, capture_output=True, env=env)
    assert (tmp_path / "secrets/store.pass").read_text().strip() != password
