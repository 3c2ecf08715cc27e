"""The page in a real headless browser (Debian's chromium through Playwright): upload
examples/ref.png and examples/speech.wav, watch the frames play while they are generated, play the
finished mp4, download it and check it. EMO_RT_SCREENSHOTS=DIR keeps the page's screenshots."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from emo_rt.io.video import read_video
from tests.serve.server import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")]


def test_the_page_plays_the_portrait_while_it_renders_and_gives_the_mp4(prosody_model_dir, tmp_path):
    shots = Path(os.environ.get("EMO_RT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with ServerProcess(tmp_path, "--weights", str(prosody_model_dir), "--portraits", str(EXAMPLES)) as server, \
            playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1100, "height": 720}, accept_downloads=True)
        page.goto(server.url)
        page.wait_for_function("document.querySelector('#gallery img') !== null")  # --portraits listed
        page.set_input_files("#reference", str(EXAMPLES / "ref.png"))
        page.set_input_files("#audio", str(EXAMPLES / "speech.wav"))
        page.fill("#steps", "2")
        page.fill("#seed", "3")
        page.click("#go")

        page.wait_for_function("window.emoState.played >= 16", timeout=300_000)  # two windows shown
        status = page.evaluate("window.emoState.status")
        assert status["state"] == "rendering" and status["frames"] < status["total_frames"]  # playing mid-render
        page.screenshot(path=str(shots / "serve-rendering.png"))

        page.wait_for_function("window.emoState.done", timeout=600_000)
        page.wait_for_function("window.emoState.played === window.emoState.total", timeout=60_000)
        state = page.evaluate("window.emoState")
        total = math.ceil(7.0115 * 25)
        assert state["total"] == state["received"] == total and state["error"] is None
        assert state["status"]["real_time_factor"] > 0 and state["status"]["position"] is None
        assert page.text_content("#s-rtf").startswith(f"{state['status']['real_time_factor']:.2f}")
        print(f"the page's first frames {state['firstFrameSeconds']:.2f} s after the click; the first window "
              f"rendered in {state['status']['first_frames_seconds']:.2f} s")

        page.evaluate("document.querySelector('#video').muted = true; document.querySelector('#video').play()")
        page.wait_for_function("window.emoState.videoPlayed && document.querySelector('#video').currentTime > 0.2",
                               timeout=60_000)
        page.evaluate("document.querySelector('#video').pause()")
        page.screenshot(path=str(shots / "serve-done.png"))

        with page.expect_download() as download:
            page.click("#download")
        saved = tmp_path / "download.mp4"
        download.value.save_as(saved)
        browser.close()
        frames, info = read_video(saved)
        assert frames.shape == (total, 128, 128, 3)
        assert info.audio_codec == "aac" and abs(info.audio_duration - 7.0115) < 0.03
        assert server.stop() == 143
        assert list(server.tmp.iterdir()) == []
