"""A model with the prosody row: the wav2vec2 engine leaves it out, the engine backend appends it on
the host, and the projector engine reads the extra row, matching the torch model."""

import dataclasses

import onnxruntime as ort
import torch
from export_helpers import THREADS, relative_error

from emo_rt.config import tiny
from emo_rt.export import build_engines
from emo_rt.export.specs import export_specs
from emo_rt.models import EmoModel
from emo_rt.runtime.backends.manifest import read_engines
from emo_rt.runtime.backends.onnxruntime import BACKEND, OrtComponents


def test_onnxruntime_audio_path_with_the_prosody_row_matches_torch(tmp_path):
    base = tiny()
    config = dataclasses.replace(base, audio=dataclasses.replace(base.audio, prosody=True))
    assert config.audio.num_prosody_rows == 1
    specs = export_specs(config)
    assert specs["audio_encoder"].outputs[0].shape[2] == len(config.audio.feature_layers)
    assert specs["audio_projector"].inputs[0].shape[2] == config.audio.num_feature_rows

    torch.manual_seed(0)
    model = EmoModel(config).eval()
    model_dir = model.save_pretrained(tmp_path / "model")
    names = ["audio_encoder", "audio_projector"]
    build_engines(model_dir, BACKEND, "fp32", tmp_path / "engines", progress=False, names=names)
    records = read_engines(tmp_path / "engines", model_dir, BACKEND, "fp32", ort.__version__, device="any",
                           names=names)
    engines = OrtComponents(config, records, providers=["CPUExecutionProvider"], threads=THREADS)

    t = torch.arange(16000) / 16000
    # a voiced second rising in loudness and by 4 semitones in pitch
    phase = 2 * torch.pi * 190 * torch.cumsum(2 ** (4 * t / 12), 0) / 16000
    waveform = (0.4 * torch.sin(phase) * (1 + t))[None]
    fp64 = EmoModel(config)
    fp64.load_state_dict(model.state_dict())
    fp64 = fp64.double().eval()
    with torch.no_grad():
        features32 = model.audio_encoder(waveform, 25)
        features64 = fp64.audio_encoder(waveform.double(), 25)
        tokens32, tokens64 = model.audio_projector(features32), fp64.audio_projector(features64)
    features = engines.encode_audio(waveform, 25)
    assert torch.equal(features[:, :, -1:], features32[:, :, -1:])  # the row is computed the same way
    assert (features32[:, :, -1:].abs().sum(dim=(0, 1, 3)) > 0).all()
    # as the parity suite (check_engine_outputs): the engine's error against fp64 torch within 4x fp32
    # torch's own, plus 8 ulps
    for out, ref32, ref64 in ((features, features32, features64),
                              (engines.project_audio(features), tokens32, tokens64)):
        assert relative_error(out, ref64) <= 4 * relative_error(ref32, ref64) + 1e-6
