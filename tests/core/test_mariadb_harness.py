"""The test MariaDB starts on a machine whose host name does not resolve (a fresh container, a Pi renamed
without updating /etc/hosts): ``mariadb-install-db`` must not depend on name lookups.

The test runs the harness in private mount and UTS namespaces with a random host name and an /etc/hosts that
knows neither it nor ``localhost``; it needs root (``unshare``), and is skipped where namespaces are refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _namespaces_allowed() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-mu", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_allowed(), reason="needs root and unshare (mount + UTS namespaces)")
def test_test_database_installs_and_serves_where_no_host_name_resolves(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# neither the host name nor localhost\n")
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(f"""
        import socket, sys
        sys.path.insert(0, {str(REPO)!r})
        try:
            socket.getaddrinfo(socket.gethostname(), None)
            sys.exit("the host name still resolves: the test would prove nothing")
        except socket.gaierror:
            pass
        import pymysql
        from pathlib import Path
        from tests.support.mariadb import MariaDB
        db = MariaDB(Path({str(tmp_path / 'mariadb')!r})).install()
        try:
            conn = pymysql.connect(host=db.host, port=db.port, user="wattbus", password=db.password)
            with conn.cursor() as cur:
                cur.execute("SELECT 40 + 2")
                print("answer", cur.fetchone()[0])
            conn.close()
        finally:
            db.stop()
        """))
    name = f"wb-{secrets.token_hex(4)}"
    run = subprocess.run(
        ["unshare", "-mu", "sh", "-c", f'mount --bind "$1" /etc/hosts && hostname {name} && exec "$2" "$3"',
         "sh", str(hosts), sys.executable, str(script)],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "answer 42" in run.stdout
