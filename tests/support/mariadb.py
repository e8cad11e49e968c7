"""A private MariaDB for tests: its own datadir, socket and free loopback port, never the system server.

``mariadb-install-db`` makes a fresh datadir (a few seconds), ``mariadbd --no-defaults`` serves it, and a
``wattbus`` user with a password is created so tests connect the way a real installation does. ``stop()``
and ``start()`` keep the datadir and the port, so a test can take the database away and bring it back.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.ports import free_port, wait_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
USER = "wattbus"


class MariaDB:
    def __init__(self, workdir: Path):
        if not (Path(MARIADBD).exists() and Path(INSTALL_DB).exists()):
            raise RuntimeError("mariadb-server is not installed: run ./run test (it installs it)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "mariadb.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.password_file = self.dir / "wattbus.pass"
        self.password_file.write_text(self.password + "\n")
        os.chmod(self.password_file, 0o600)
        self.proc: subprocess.Popen | None = None

    def install(self) -> "MariaDB":
        subprocess.run(
            # --force --skip-name-resolve: no host name lookup, so a machine whose name (or even
            # "localhost") does not resolve still gets a test database; grants are by IP anyway.
            [INSTALL_DB, "--no-defaults", "--force", "--skip-name-resolve",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             f"--datadir={self.datadir}", f"--user={getpass.getuser()}"],
            check=True, capture_output=True, timeout=120,
        )
        self.start()
        self.root_sql(
            f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{self.password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'",
        )
        return self

    def start(self) -> "MariaDB":
        cmd = [
            MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
            f"--port={self.port}", "--bind-address=127.0.0.1", f"--user={getpass.getuser()}",
            f"--pid-file={self.dir / 'mysqld.pid'}", f"--tmpdir={self.dir}", "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=64M", "--max-allowed-packet=64M",
            "--skip-log-bin", "--performance-schema=OFF",
        ]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, timeout=60)
        except TimeoutError:
            raise RuntimeError(f"mariadbd did not start: {self.log.read_text()[-3000:]}") from None
        return self

    def stop(self) -> None:
        """Clean shutdown (SIGTERM): what a `systemctl stop mariadb` looks like to a client."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.proc = None
        deadline = time.monotonic() + 10
        while self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def root_sql(self, *statements: str) -> list[tuple]:
        """Run statements as root over the socket; the rows of the last one."""
        import pymysql

        conn = pymysql.connect(unix_socket=str(self.socket), user="root", password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                rows: list[tuple] = []
                for s in statements:
                    cur.execute(s)
                    rows = list(cur.fetchall())
                return rows
        finally:
            conn.close()

    def url(self, database: str) -> str:
        """A sink URL for ``database`` as user wattbus, the password in a file (never in the URL)."""
        return f"mysql://{USER}@{self.host}:{self.port}/{database}?password_file={self.password_file}"
