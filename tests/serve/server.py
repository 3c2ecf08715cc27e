"""`emo-rt serve` as a real process on 127.0.0.1 and a free port, for the tests: started with its own
TMPDIR (so every temporary file it makes is seen), stopped with SIGTERM (or the signal asked for)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, tmp: Path, *args: str, ready_seconds: float = 180.0, sigint_ignored: bool = False):
        self.tmp = tmp / "server-tmp"  # the server's TMPDIR: its scratch folder and anything else it writes
        self.tmp.mkdir(parents=True)
        self.log = tmp / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TMPDIR": str(self.tmp), "OMP_NUM_THREADS": "1"}
        with open(self.log, "wb") as log:
            command = [sys.executable, "-m", "emo_rt.cli", "serve", "--port", str(self.port), "--threads", "1", *args]
            if sigint_ignored:  # as a script's `emo-rt serve &` starts it
                command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + ready_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                self.info = requests.get(self.url + "/api/info", timeout=5).json()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"the server did not answer in {ready_seconds:.0f} s:\n{self.output()}")
                time.sleep(0.3)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def leftovers(self) -> list[str]:
        """Every file and folder under the server's TMPDIR but its (empty) scratch folder."""
        found = []
        for path in sorted(self.tmp.rglob("*")):
            relative = path.relative_to(self.tmp)
            if len(relative.parts) == 1 and path.is_dir() and path.name.startswith("emo-rt-serve-"):
                continue
            found.append(str(relative))
        return found

    def stop(self, timeout: float = 90.0, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
