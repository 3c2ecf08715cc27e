"""End to end: the same render (seed, settings) on the onnxruntime engines and on torch gives the
same video: PSNR >= 40 dB on every frame. Two windows (so motion frames come from the first one)
and guidance on (so the step runs its batch-2 pair)."""

from __future__ import annotations

import math

import numpy as np
from export_helpers import THREADS

from emo_rt.io.image import FaceBox, prepare_reference
from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.backends import load_components
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule


def drawn_portrait(size: int = 160) -> np.ndarray:
    """A face-like drawing: gradient background, skin ellipse, dark eyes and mouth. (H, W, 3) uint8."""
    y, x = np.mgrid[:size, :size] / size
    image = np.stack([0.3 + 0.4 * x, 0.4 + 0.2 * y, 0.6 - 0.3 * x], -1)
    face = ((x - 0.5) / 0.28) ** 2 + ((y - 0.5) / 0.36) ** 2 < 1
    image[face] = (0.85, 0.65, 0.5)
    for cx in (0.4, 0.6):
        image[((x - cx) / 0.04) ** 2 + ((y - 0.42) / 0.025) ** 2 < 1] = (0.1, 0.1, 0.15)
    image[(np.abs(x - 0.5) < 0.09) & (np.abs(y - 0.66) < 0.015)] = (0.55, 0.2, 0.2)
    return (image * 255).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def render_frames(pipeline: EmoPipeline, reference, waveform, settings) -> np.ndarray:
    return np.concatenate(list(pipeline(reference, waveform, settings)))


def test_onnxruntime_render_matches_torch(tiny_model_dir, ort_engines):
    config = EmoModel.from_pretrained(tiny_model_dir).config
    reference = prepare_reference(drawn_portrait(), config.resolution, face_box=FaceBox(35, 22, 90, 115))
    t = np.arange(int(0.5 * config.audio.sample_rate)) / config.audio.sample_rate  # 0.5 s: 13 frames, 2 windows
    waveform = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    settings = RenderSettings(steps=3, cfg=2.5, seed=7)

    torch_pipeline = EmoPipeline(TorchComponents(EmoModel.from_pretrained(tiny_model_dir)), noise_schedule(None))
    ort = load_components("onnxruntime", tiny_model_dir, ort_engines[0], threads=THREADS)
    ort_pipeline = EmoPipeline(ort, noise_schedule(None))
    expected = render_frames(torch_pipeline, reference, waveform, settings)
    got = render_frames(ort_pipeline, reference, waveform, settings)

    assert got.shape == expected.shape == (13, config.resolution, config.resolution, 3)
    assert expected.std() > 5, "the torch render is flat: the comparison would say nothing"
    per_frame = [psnr(g, e) for g, e in zip(got, expected)]
    assert min(per_frame) >= 40, f"per-frame PSNR (dB): {[round(p, 1) for p in per_frame]}"
