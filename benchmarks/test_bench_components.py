"""pytest-benchmark suite: each stage of the runtime on the tiny preset (random init, torch eager),
with the inputs `emo-rt bench` times (emo_rt.bench.ComponentProbe), plus the render with and
without stage overlap and this machine's fp32 matmul.

    python -m pytest benchmarks/test_bench_components.py --benchmark-enable [--benchmark-json out.json]

Without --benchmark-enable (the project's default) each benchmark runs once, as a smoke test.
"""

from __future__ import annotations

import pytest
import torch

from emo_rt.bench import ComponentProbe, synthetic_media
from emo_rt.config import tiny
from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EmoModel(tiny()).eval()


@pytest.fixture(scope="module")
def probe(model):
    return ComponentProbe(TorchComponents(model))


def test_audio_encoder_1s(benchmark, probe):
    benchmark(probe.audio_encoder)


def test_reference_net(benchmark, probe):
    benchmark(probe.reference_net)


def test_motion_features(benchmark, probe):
    benchmark(probe.motion)


@pytest.mark.parametrize("batch", [1, 2], ids=["cfg-off", "guidance-pair"])
def test_denoising_step(benchmark, probe, batch):
    benchmark(probe.step, batch)


def test_denoising_step_bf16(benchmark, model):
    bf16 = EmoModel(model.config).eval()
    bf16.load_state_dict(model.state_dict())
    probe = ComponentProbe(TorchComponents(bf16.to(torch.bfloat16), torch.bfloat16))
    benchmark(probe.step, 1)


def test_vae_decode_window(benchmark, probe):
    benchmark(probe.vae_decode)


def test_video_encode_window(benchmark, probe, tmp_path):
    benchmark(probe.video_encode, tmp_path, 1)


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
def test_render_1s(benchmark, model, overlap):
    media = synthetic_media(model.config.resolution, 1.0)
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None))
    settings = RenderSettings(steps=2, cfg=3.5, overlap=overlap)
    benchmark.pedantic(lambda: [len(w) for w in pipe(media.reference, media.waveform, settings)], rounds=1)


def test_fp32_matmul_2048(benchmark):
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    benchmark(torch.mm, a, b)
