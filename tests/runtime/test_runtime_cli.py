"""`emo-rt render`'s runtime options: the reference cache across runs (default directory from
$EMO_RT_CACHE_DIR, or off), and the speed levers that keep the frames (overlap, threads)."""

from __future__ import annotations

import numpy as np
import torch

from emo_rt.cli import main
from emo_rt.io.video import read_video
from emo_rt.runtime.components import TorchComponents
from tests.pipeline.conftest import write_speech_like


def test_render_reuses_reference_features_across_runs(model_dir, portrait, tmp_path, monkeypatch, capsys):
    audio = write_speech_like(tmp_path / "a.wav", 0.4, rate=16000)  # 10 frames: two windows
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMO_RT_CACHE_DIR", str(cache))
    calls = []
    real = TorchComponents.reference_features
    monkeypatch.setattr(TorchComponents, "reference_features", lambda self, x: calls.append(1) or real(self, x))
    common = ["render", str(portrait), str(audio), "--weights", str(model_dir), "--steps", "1", "--cfg", "2", "-q"]

    assert main([*common, "-o", str(tmp_path / "a.mp4")]) == 0
    assert len(calls) == 1 and len(list(cache.glob("*.safetensors"))) == 1
    assert main([*common, "-o", str(tmp_path / "b.mp4"), "--no-overlap"]) == 0
    assert len(calls) == 1  # from the cache: no ReferenceNet pass on the reference
    threads = torch.get_num_threads()
    try:
        assert main([*common, "-o", str(tmp_path / "c.mp4"), "--reference-cache", "off", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2
    assert "real-time factor" in capsys.readouterr().out

    assert main([*common, "-o", str(tmp_path / "d.mp4"), "--seed", "1"]) == 0  # the control: other noise
    a, b, c, d = (read_video(tmp_path / f"{n}.mp4")[0].astype(int) for n in "abcd")
    assert a.shape[0] == 10 and np.array_equal(a, b)
    # another thread count sums in another order: float rounding, which a random-init model amplifies
    # (1.4 grey levels measured), far below what other noise changes
    assert np.abs(a - c).mean() < 0.2 * np.abs(a - d).mean()
