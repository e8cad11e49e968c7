"""A private VictoriaMetrics for tests: a real time-series database that accepts InfluxDB's /api/v2/write.

Debian's ``victoria-metrics`` on a free loopback port with its own data directory and a 100-year retention
(the test data is from 2024). ``stop()``/``start()`` keep both, so a test can take it away and bring it back.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from tests.support.ports import free_port, wait_port

BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class Victoria:
    def __init__(self, workdir: Path):
        if not Path(BINARY).exists():
            raise RuntimeError("victoria-metrics is not installed: run ./run test (it installs it)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log = self.dir / "victoria.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Victoria":
        self.proc = subprocess.Popen(
            [BINARY, f"-httpListenAddr={self.host}:{self.port}", f"-storageDataPath={self.dir / 'data'}",
             "-retentionPeriod=100y", "-search.disableCache", "-loggerLevel=WARN"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port, timeout=30)
        except TimeoutError:
            raise RuntimeError(f"victoria-metrics did not start: {self.log.read_text()[-3000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def flush(self) -> None:
        """Make recently written samples searchable now instead of within a second or so."""
        httpx.get(f"{self.base}/internal/force_flush", timeout=10)

    def raw_timestamps(self, metric: str, device: str) -> list[int]:
        """Every stored sample's timestamp of one series, duplicates included (the export is raw)."""
        self.flush()
        r = httpx.post(f"{self.base}/api/v1/export", timeout=30,
                       data={"match[]": f'{{__name__="{metric}",device="{device}"}}', "start": "0"})
        r.raise_for_status()
        import orjson

        out: list[int] = []
        for line in r.content.splitlines():
            if line.strip():
                out += orjson.loads(line)["timestamps"]
        return sorted(out)

    def url(self, bucket: str = "energy", **extra: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"org": "home", "bucket": bucket, **extra}.items())
        return f"influx://{self.host}:{self.port}?{query}"
