"""Probe: OpenVINO bf16 sequential and overlapped, and overlapped with a one-thread VAE decoder beside the
two-thread step, 4 interleaved rounds.  python lab/openvino/render_decoder_threads.py ENGINES"""
import sys, time, torch, numpy as np, openvino as ov
from emo_rt.pipeline import EmoPipeline, default_model_dir, model_render_settings, with_overrides
from emo_rt.runtime.backends import load_components
from emo_rt.runtime.backends.openvino import _Runner
from emo_rt.bench import synthetic_media, timed_render
from pathlib import Path
torch.set_num_threads(1)
md = default_model_dir()
a = load_components("openvino", md, sys.argv[1], "bf16")
b = load_components("openvino", md, sys.argv[1], "bf16")
core = ov.Core()
for name in ["vae_decoder"]:
    rec = b.records[name]
    b._runners[name, None] = _Runner(core.compile_model(core.read_model(str(rec.path)), "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}))
pa, pb = EmoPipeline.from_pretrained(md), EmoPipeline.from_pretrained(md)
pa.components, pb.components = a, b
media = synthetic_media(128, 4.0)
base = model_render_settings(md)
res = {}
for r in range(4):
    for name, p, ovl in [("dec2 seq", pa, False), ("dec2 ovl", pa, True), ("dec1 ovl", pb, True)]:
        run = timed_render(p, media, with_overrides(base, overlap=ovl), Path("/tmp/x.mp4"))
        res.setdefault(name, []).append(run["row"]["frames_per_second"])
for k, v in res.items(): print(k, [round(x, 1) for x in v])
