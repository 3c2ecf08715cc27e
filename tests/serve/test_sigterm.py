"""SIGTERM and Ctrl-C (SIGINT) stop `emo-rt serve` cleanly: the render in flight finishes within
--shutdown-grace or is stopped with a clear status, waiting renders fail with one, open requests are
answered, every temporary file goes, and the process exits 143 (SIGTERM) or 130 (SIGINT) with the
CLI's one line."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests

from tests.serve.server import ServerProcess
from tests.serve.test_api import check_mp4, wav_bytes

EXIT = {signal.SIGINT: (130, "emo-rt: interrupted"), signal.SIGTERM: (143, "emo-rt: terminated")}
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])


def assert_stopped(server, code: int, signum: int) -> None:
    """The signal's exit code and its one `emo-rt:` line, no traceback."""
    output = server.output()
    lines = [line for line in output.splitlines() if line.startswith("emo-rt:")]
    assert code == EXIT[signum][0] and len(lines) == 1 and lines[0].startswith(EXIT[signum][1]), output
    assert "Traceback" not in output, output


def post_render(server, face: bytes, seconds: float, fields: dict, out: dict) -> threading.Thread:
    def run():
        files = {"reference": ("face.png", face), "audio": ("speech.wav", wav_bytes(seconds))}
        out["answer"] = requests.post(server.url + "/api/render", files=files, data=fields, timeout=600)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_rendering(server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not requests.get(server.url + "/api/info", timeout=10).json()["queue"]["rendering"]:
        assert time.monotonic() < deadline, "no render started"
        time.sleep(0.1)


def last_status(server, job: str, out: dict) -> threading.Thread:
    """Follow the job's events to their end; keep the last status."""
    def run():
        with requests.get(f"{server.url}/api/jobs/{job}/events", stream=True, timeout=600) as events:
            kind = None
            for line in events.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "status":
                    out["status"] = json.loads(line[6:])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@SIGNALS
def test_signal_stops_the_render_in_flight_and_fails_the_waiting_one(prosody_model_dir, face_png, tmp_path, signum):
    face = face_png.read_bytes()
    with ServerProcess(tmp_path, "--weights", str(prosody_model_dir), "--shutdown-grace", "0") as server:
        running: dict = {}
        renderer = post_render(server, face, 3.0, {"steps": "20", "cfg": "2"}, running)  # a long render
        wait_rendering(server)
        files = {"reference": ("face.png", face), "audio": ("speech.wav", wav_bytes(1.0))}
        queued = requests.post(server.url + "/api/jobs", files=files, data={"steps": "1"}, timeout=60).json()
        assert queued["state"] == "queued" and queued["position"] == 1
        followed: dict = {}
        follower = last_status(server, queued["id"], followed)
        time.sleep(0.5)
        signalled = time.monotonic()
        code = server.stop(signum=signum)
        stopped_in = time.monotonic() - signalled
        renderer.join(60)
        follower.join(60)
        assert_stopped(server, code, signum)
        answer = running["answer"]
        assert answer.status_code == 503
        assert answer.json() == {"error": "the server is shutting down: the render was stopped"}
        assert followed["status"]["state"] == "failed"
        assert followed["status"]["error"] == "the server is shutting down: the render did not start"
        assert list(server.tmp.iterdir()) == []  # uploads, mp4s, the scratch folder: all gone
        print(f"{signal.Signals(signum).name} to exit: {stopped_in:.1f} s")
        assert stopped_in < 30


@SIGNALS
def test_signal_lets_a_render_finish_within_the_grace(prosody_model_dir, face_png, tmp_path, signum):
    face = face_png.read_bytes()
    with ServerProcess(tmp_path, "--weights", str(prosody_model_dir), "--shutdown-grace", "300") as server:
        running: dict = {}
        renderer = post_render(server, face, 1.0, {"steps": "2", "cfg": "1"}, running)
        wait_rendering(server)
        code = server.stop(signum=signum)
        renderer.join(60)
        assert_stopped(server, code, signum)
        answer = running["answer"]
        assert answer.status_code == 200, answer.text
        check_mp4(answer.content, 1.0, tmp_path, "finished.mp4")
        assert list(server.tmp.iterdir()) == []


def test_sigint_is_130_when_started_with_it_ignored(prosody_model_dir, tmp_path):
    """uvicorn stops on SIGINT even when the process inherited it ignored; serve then still exits 130."""
    with ServerProcess(tmp_path, "--weights", str(prosody_model_dir), sigint_ignored=True) as server:
        assert_stopped(server, server.stop(signum=signal.SIGINT), signal.SIGINT)
        assert list(server.tmp.iterdir()) == []
