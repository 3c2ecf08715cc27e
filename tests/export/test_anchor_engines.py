"""A model with an anchor frame (EmoConfig.anchor "residual"): the step engine takes anchor_latents
as one more input, and onnxruntime's step matches the torch model's."""

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
from tests.models.test_backbone import window_inputs


def test_onnxruntime_step_with_the_anchor_matches_torch(tmp_path):
    config = dataclasses.replace(tiny(), anchor="residual")
    step = export_specs(config)["step"]
    assert step.inputs[-1].name == "anchor_latents"
    assert "anchor_latents" not in {s.name for s in export_specs(tiny())["step"].inputs}

    torch.manual_seed(0)
    model = EmoModel(config).eval()
    model_dir = model.save_pretrained(tmp_path / "model")
    build_engines(model_dir, BACKEND, "fp32", tmp_path / "engines", progress=False, names=["step"])
    records = read_engines(tmp_path / "engines", model_dir, BACKEND, "fp32", ort.__version__, device="any",
                           names=["step"])
    engines = OrtComponents(config, records, providers=["CPUExecutionProvider"], threads=THREADS)

    h, c = config.latent_size, config.vae.latent_channels
    inputs = window_inputs(model)
    inputs["anchor_latents"] = torch.randn(1, c, h, h, generator=torch.Generator().manual_seed(3))
    fp64 = EmoModel(config)
    fp64.load_state_dict(model.state_dict())
    fp64 = fp64.double().eval()
    as64 = {k: ([x.double() for x in v] if isinstance(v, list) else v if k == "timestep" else v.double())
            for k, v in inputs.items()}
    with torch.no_grad():
        ref32, ref64 = model.backbone(**inputs), fp64.backbone(**as64)
    out = engines.denoise(*inputs.values())
    # as the parity suite (check_engine_outputs): the engine's error against fp64 torch within 4x fp32
    # torch's own, plus 8 ulps
    assert relative_error(out, ref64) <= 4 * relative_error(ref32, ref64) + 1e-6
    zero_anchor = dict(inputs, anchor_latents=torch.zeros_like(inputs["anchor_latents"]))
    assert relative_error(engines.denoise(*zero_anchor.values()), out) > 1e-3  # the input is live
