"""deploy/install.sh against a scratch root directory (--root), as a Pi would get it.

In --root mode the script changes nothing outside that directory: apt-get, useradd and systemctl start/stop
are skipped (it says so), chown is replaced by the list of owners it would set (ROOT/.install-owners), and
units are enabled with `systemctl --root` (symlinks only). The rest is real: a venv with wattbus installed by
pip, passwords made by mosquitto/make-user.sh, the ACL by `wattbus acl`, and `systemd-analyze verify` on
every unit (against a copy of this machine's systemd units inside the root). Where this machine is root and
has the `mosquitto` user, the installed owners are applied for real and Mosquitto, dropping to that user,
must read what it needs.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.deploy.support import NOT_AUTHORIZED, Client
from tests.support.ports import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
HOST_UNITS = Path("/usr/lib/systemd/system")
PROCESSES = ("meters", "store", "exporter")  # deploy/wattbus.example.toml

pytestmark = pytest.mark.slow


def install(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["sh", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def owners(root: Path) -> dict[str, tuple[str, str]]:
    """ROOT/.install-owners: path -> (user:group, mode), what install.sh would chown on a real system."""
    out = {}
    for line in (root / ".install-owners").read_text().splitlines():
        who, mode, path = line.split(" ", 2)
        out[path] = (who, mode)
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with mode, size, mtime and content hash (bytecode caches aside)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            snap[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest,
                                              os.readlink(p) if p.is_symlink() else "")
    return snap


def clone(root: Path, tmp: Path) -> Path:
    dst = tmp / "root"
    shutil.copytree(root, dst, symlinks=True)
    dst.chmod(0o755)
    return dst


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def installed():
    """One real install (venv included, ~30 s) that the tests read or clone; under /tmp so that the user
    `mosquitto` can reach it once owners are applied."""
    root = Path(tempfile.mkdtemp(prefix="wattbus-root-"))
    root.chmod(0o755)
    if shutil.which("systemd-analyze") and (HOST_UNITS / "sysinit.target").exists():
        # a scratch root has no systemd: give it this machine's units so that verify can resolve targets
        shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    first = install(root)
    yield root, first
    shutil.rmtree(root, ignore_errors=True)


def test_install_makes_one_user_password_and_unit_per_process(installed):
    root, first = installed
    for step in ("apt-get", "useradd", "systemctl daemon-reload"):
        assert f"(--root) skipped: {step}" in first.stderr, f"the skipped host step {step} is not reported"
    own = owners(root)
    assert own["/etc/wattbus/wattbus.toml"] == ("root:wattbus", "0640")
    assert own["/etc/wattbus/mqtt"] == ("root:root", "0700")
    assert own["/etc/wattbus/mosquitto"] == ("root:mosquitto", "0750")
    for f in ("passwd", "acl", "mosquitto.conf"):
        assert own[f"/etc/wattbus/mosquitto/{f}"] == ("root:mosquitto", "0640"), f
    for path, (who, mode) in own.items():
        assert oct((root / path.lstrip("/")).stat().st_mode & 0o7777) == oct(int(mode, 8)), path
    passwd = (root / "etc/wattbus/mosquitto/passwd").read_text()
    for name in PROCESSES:
        secret = root / f"etc/wattbus/mqtt/{name}.pass"
        assert own[f"/etc/wattbus/mqtt/{name}.pass"] == ("root:root", "0600")
        assert len(secret.read_text().strip()) >= 32
        assert re.search(rf"(?m)^{name}:\$7\$", passwd) and secret.read_text().strip() not in passwd
        link = root / f"etc/systemd/system/multi-user.target.wants/wattbus@{name}.service"
        assert os.readlink(link) == "/etc/systemd/system/wattbus@.service"
    assert (root / "etc/systemd/system/wattbus@.service").read_text() == \
        (REPO / "deploy/systemd/wattbus@.service").read_text()
    assert "ExecStart=/usr/sbin/mosquitto -c /etc/wattbus/mosquitto/mosquitto.conf" in \
        (root / "etc/systemd/system/mosquitto.service.d/wattbus.conf").read_text()
    assert not list(root.glob("etc/systemd/system/wattbus@*.service.d"))  # no hardware in the example
    for path in [*root.glob("etc/wattbus/mqtt/**/*"), *root.glob("etc/wattbus/mosquitto/**/*"),
                 root / "etc/wattbus/wattbus.toml"]:
        assert not path.stat().st_mode & 0o007, f"{path} is readable by everyone"
    venv = root / "opt/wattbus/.venv"
    assert (venv / "bin").stat().st_mode & 0o005 == 0o005  # code every unit (user wattbus) runs
    assert all(p.stat().st_mode & 0o004 for p in venv.glob("lib/python3*/site-packages/wattbus/*.py"))


def test_the_installed_acl_is_what_wattbus_acl_writes_for_the_installed_config(installed):
    root, _ = installed
    wattbus = root / "opt/wattbus/.venv/bin/wattbus"
    r = subprocess.run([str(wattbus), "-c", str(root / "etc/wattbus/wattbus.toml"), "acl"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (root / "etc/wattbus/mosquitto/acl").read_text() == r.stdout
    assert "user store\ntopic read +/+/reading\n" in r.stdout


def test_a_second_run_changes_nothing_and_keeps_every_password(installed):
    root, _ = installed
    before = snapshot(root)
    again = install(root)
    assert snapshot(root) == before
    for noisy in ("wrote", "broker user", "enabled", "installing wattbus"):
        assert noisy not in again.stderr, again.stderr


def test_every_unit_passes_systemd_analyze_verify_and_is_hardened(installed):
    root, _ = installed
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing (Debian package systemd): units cannot be verified here")
    if not (root / "usr/lib/systemd/system/sysinit.target").exists():
        pytest.skip(f"this machine has no {HOST_UNITS}: no targets to verify the units against")
    units = [f"wattbus@{n}.service" for n in PROCESSES]
    r = verify(root, *units)
    assert r.returncode == 0, r.stdout + r.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", units[0]],
                         capture_output=True, text=True)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", sec.stdout)
    assert score, sec.stdout + sec.stderr
    print(f"systemd-analyze security {units[0]}: {score.group(1)} {score.group(2)}")
    assert float(score.group(1)) <= 2.0  # "OK" on systemd's 0 (safe) .. 10 (exposed) scale


def test_the_mosquitto_drop_in_verifies_against_debians_unit(tmp_path):
    host_unit = HOST_UNITS / "mosquitto.service"
    if not shutil.which("systemd-analyze") or not host_unit.exists():
        pytest.skip("needs systemd-analyze and Debian's mosquitto.service on this machine")
    shutil.copy(host_unit, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    shutil.copy(REPO / "deploy/systemd/mosquitto-wattbus.conf", tmp_path / "mosquitto.service.d/wattbus.conf")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_adding_and_removing_processes(installed, tmp_path):
    root = clone(installed[0], tmp_path)
    kept = {n: (root / f"etc/wattbus/mqtt/{n}.pass").read_text() for n in PROCESSES}
    conf = root / "etc/wattbus/wattbus.toml"
    conf.write_text(conf.read_text() + """
[producer.adc]
type = "adc"
spi = "spidev"
[producer.adc.circuits.mains]
voltage_channel = 0
current_channels = [1]

[producer.meter]
type = "p1"
port = "/dev/ttyUSB0"

[producer.dongle]
type = "p1"
port = "tcp://192.168.1.30:23"
""")
    r = install(root)
    assert "installing wattbus" in r.stderr  # the adc needs the [pi] extras (spidev)
    for name in ("adc", "meter", "dongle"):
        assert (root / f"etc/wattbus/mqtt/{name}.pass").exists(), name
        assert (root / f"etc/systemd/system/multi-user.target.wants/wattbus@{name}.service").is_symlink()
    assert {n: (root / f"etc/wattbus/mqtt/{n}.pass").read_text() for n in PROCESSES} == kept
    dropins = root / "etc/systemd/system"
    assert (dropins / "wattbus@adc.service.d/hardware.conf").read_text() == \
        (REPO / "deploy/systemd/hardware-spi.conf").read_text()
    assert (dropins / "wattbus@meter.service.d/hardware.conf").read_text() == \
        (REPO / "deploy/systemd/hardware-serial.conf").read_text()
    assert not (dropins / "wattbus@dongle.service.d").exists()  # a P1 dongle over TCP needs no device
    assert "SupplementaryGroups" not in (dropins / "wattbus@.service").read_text()  # only the adc unit
    assert "user adc\n" in (root / "etc/wattbus/mosquitto/acl").read_text()
    if shutil.which("systemd-analyze") and (root / "usr/lib/systemd/system/sysinit.target").exists():
        v = verify(root, "wattbus@adc.service", "wattbus@meter.service", "wattbus@dongle.service")
        assert v.returncode == 0, v.stdout + v.stderr

    conf.write_text(conf.read_text().split("\n[producer.adc]")[0])  # the three go again
    r = install(root)
    for name in ("adc", "meter", "dongle"):
        assert f"process {name} is no longer configured" in r.stderr
        assert not (root / f"etc/systemd/system/multi-user.target.wants/wattbus@{name}.service").exists()
        assert not (root / f"etc/wattbus/mqtt/{name}.pass").exists()
        assert not (dropins / f"wattbus@{name}.service.d").exists()
        assert not re.search(rf"(?m)^{name}:", (root / "etc/wattbus/mosquitto/passwd").read_text())
    assert {n: (root / f"etc/wattbus/mqtt/{n}.pass").read_text() for n in PROCESSES} == kept


def test_rotating_a_password_changes_only_that_process(installed, tmp_path):
    root = clone(installed[0], tmp_path)
    passwd = root / "etc/wattbus/mosquitto/passwd"
    lines = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    old = {n: (root / f"etc/wattbus/mqtt/{n}.pass").read_text() for n in PROCESSES}
    r = install(root, "--rotate", "store")
    assert "new password for store" in r.stderr
    new_lines = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert (root / "etc/wattbus/mqtt/store.pass").read_text() != old["store"]
    assert new_lines["store"] != lines["store"]
    for n in ("meters", "exporter"):
        assert new_lines[n] == lines[n] and (root / f"etc/wattbus/mqtt/{n}.pass").read_text() == old[n]
    assert oct((root / "etc/wattbus/mqtt/store.pass").stat().st_mode & 0o777) == "0o600"
    bad = subprocess.run(["sh", str(INSTALL), "--root", str(root), "--rotate", "nosuch"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "no such process" in bad.stderr


def test_uninstall_keeps_config_passwords_and_data_and_purge_removes_them(installed, tmp_path):
    root = clone(installed[0], tmp_path)
    (root / "var/lib/wattbus/wattbus.db").write_text("data")
    install(root, "--uninstall")
    for gone in ("etc/systemd/system/wattbus@.service", "etc/systemd/system/mosquitto.service.d",
                 "opt/wattbus", "etc/wattbus/mosquitto", "etc/wattbus/mosquitto.d"):
        assert not (root / gone).exists(), gone
    assert not list(root.glob("etc/systemd/system/multi-user.target.wants/wattbus@*"))
    for kept in ("etc/wattbus/wattbus.toml", "etc/wattbus/mqtt/store.pass", "var/lib/wattbus/wattbus.db"):
        assert (root / kept).exists(), kept
    assert all(not p.startswith(("/etc/wattbus/mosquitto", "/opt/wattbus")) for p in owners(root))
    install(root, "--uninstall", "--purge")
    assert not (root / "etc/wattbus").exists() and not (root / "var/lib/wattbus").exists()
    assert not (root / ".install-owners").exists()


def _as_root_with_mosquitto_user():
    if os.geteuid() != 0:
        pytest.skip("applying the installed owners needs root")
    try:
        pwd.getpwnam("mosquitto")
        grp.getgrnam("mosquitto")
    except KeyError:
        pytest.skip("no `mosquitto` user on this machine (Debian's mosquitto package makes it)")


def _apply_owners(root: Path) -> None:
    """What install.sh does on a real system, for the users this machine has (not `wattbus`)."""
    for path, (who, mode) in owners(root).items():
        user, group = who.split(":")
        try:
            os.chown(root / path.lstrip("/"), pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        except KeyError:
            continue


def _installed_broker_conf(root: Path, port: int, tls_port: int, data: Path) -> Path:
    """The installed /etc/wattbus/mosquitto/mosquitto.conf with its paths in the root and free ports."""
    text = (root / "etc/wattbus/mosquitto/mosquitto.conf").read_text()
    text = text.replace("/etc/wattbus/", f"{root}/etc/wattbus/")
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data}/", text)
    text = re.sub(r"(?m)^listener 1883 ", f"listener {port} ", text)
    tls = root / "etc/wattbus/mosquitto.d/tls.conf"
    tls.write_text(tls.read_text().replace("listener 8883", f"listener {tls_port} 127.0.0.1")
                   .replace("/etc/wattbus/", f"{root}/etc/wattbus/"))
    conf = root / "etc/wattbus/mosquitto/test.conf"
    conf.write_text(text)  # no `user` line: Mosquitto started as root drops to `mosquitto`
    return conf


def test_mosquitto_dropping_to_its_user_reads_exactly_what_install_made_readable(installed, tmp_path):
    _as_root_with_mosquitto_user()
    base = Path(tempfile.mkdtemp(prefix="wattbus-tls-"))
    try:
        base.chmod(0o755)
        certs = base / "certs"
        subprocess.run(["sh", str(REPO / "mosquitto/make-test-ca.sh"), str(certs)], check=True,
                       capture_output=True)
        root = clone(installed[0], base)
        (root / "etc/wattbus/mosquitto/passwd").unlink()  # passwords must come back from the kept .pass files
        install(root, "--tls", str(certs))
        assert owners(root)["/etc/wattbus/mosquitto/certs/server.key"] == ("root:mosquitto", "0640")
        _apply_owners(root)
        data = base / "data"
        data.mkdir()
        os.chown(data, pwd.getpwnam("mosquitto").pw_uid, grp.getgrnam("mosquitto").gr_gid)
        port, tls_port = free_port(), free_port()
        conf = _installed_broker_conf(root, port, tls_port, data)
        log = base / "mosquitto.log"

        def start() -> subprocess.Popen:
            return subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=open(log, "wb"),
                                    stderr=subprocess.STDOUT)

        broker = start()
        try:
            try:
                wait_port(port)
                wait_port(tls_port)
            except TimeoutError:
                raise AssertionError(f"mosquitto did not start: {log.read_text()[-2000:]}") from None
            host = type("B", (), {"host": "127.0.0.1", "port": port})()
            pw = {n: (root / f"etc/wattbus/mqtt/{n}.pass").read_text().strip() for n in PROCESSES}
            store = Client(host, "store", pw["store"])
            assert store.accepted
            assert store.publish("wattbus/store/health") < 0x80
            assert store.publish("sim/sim1/reading") == NOT_AUTHORIZED
            store.close()
            assert not Client(host, None, None).accepted
            meters = Client(host, "meters", pw["meters"], tls_ca=certs / "ca.crt", port=tls_port)
            assert meters.accepted and meters.publish("sim/sim1/reading") < 0x80
            meters.close()
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)
        assert "Unable to open" not in log.read_text()

        # the control: the password file root-only, as the issue found it -> Mosquitto cannot start
        (root / "etc/wattbus/mosquitto/passwd").chmod(0o600)
        os.chown(root / "etc/wattbus/mosquitto/passwd", 0, 0)
        broker = start()
        try:
            deadline = time.monotonic() + 10
            while broker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert broker.poll() is not None, "Mosquitto started although it cannot read its password file"
        finally:
            if broker.poll() is None:
                broker.kill()
        assert "Unable to open pwfile" in log.read_text()
    finally:
        shutil.rmtree(base, ignore_errors=True)
