"""Probe: an OpenVINO bf16 render (4 s synthetic, the model's settings, sequential) with every engine call
timed: stages and the step in the render vs the same step alone right after.  python lab/openvino/render_calls.py ENGINES"""
import sys
import time, torch, numpy as np, collections
from pathlib import Path
from emo_rt.pipeline import EmoPipeline, default_model_dir, model_render_settings, with_overrides
from emo_rt.runtime.backends import load_components
from emo_rt.bench import synthetic_media, ComponentProbe, timed_render
torch.set_num_threads(1)
md = default_model_dir()
comp = load_components("openvino", md, sys.argv[1], "bf16")
pipe = EmoPipeline.from_pretrained(md); pipe.components = comp
media = synthetic_media(128, 4.0)
s = with_overrides(model_render_settings(md), overlap=False)
tot = collections.defaultdict(list)
orig = comp._execute
def timed(record, inputs, shapes):
    t = time.perf_counter(); r = orig(record, inputs, shapes); tot[record.name].append(1e3*(time.perf_counter()-t)); return r
comp._execute = timed
probe = ComponentProbe(comp)
for rep in range(4):
    tot.clear()
    run = timed_render(pipe, media, s, Path("/tmp/x.mp4"))
    w = run["row"]["seconds"]; st = run["row"]["stages"]
    inrender = {k: (np.median(v), sum(v)) for k, v in tot.items()}
    tot.clear()
    for i in range(10): probe.step(1)
    iso = np.median(tot["step"])
    print(f"wall {w:.2f} stages {({k: round(v,2) for k,v in st.items()})} | step in render median {inrender['step'][0]:.1f} ms sum {inrender['step'][1]/1e3:.2f}s, isolated {iso:.1f} | motion {inrender['motion'][0]:.1f} decode {inrender['vae_decoder'][0]:.1f}")
