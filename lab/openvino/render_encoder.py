"""Probe: OpenVINO bf16 + overlap vs eager torch at 2 threads, with the video encoder at x264 medium /
veryfast and auto / 1 thread, 3 interleaved rounds.  python lab/openvino/render_encoder.py ENGINES"""
import sys
import time, torch, numpy as np, functools, av
from pathlib import Path
import emo_rt.pipeline as P
from emo_rt.io.video import VideoWriter
from emo_rt.runtime.backends import load_components
from emo_rt.bench import synthetic_media, timed_render
torch.set_num_threads(1)
md = P.default_model_dir()
comp = load_components("openvino", md, sys.argv[1], "bf16")
pipe = P.EmoPipeline.from_pretrained(md); pipe.components = comp
tpipe = P.EmoPipeline.from_pretrained(md)
media = synthetic_media(128, 4.0)
base = P.model_render_settings(md)
class VW(VideoWriter):
    opts = {}
    def __init__(self, *a, **k):
        super().__init__(*a, **{**k, **{k2: v for k2, v in self.opts.items() if k2 != "threads"}})
        if "threads" in self.opts:
            self._video.codec_context.thread_count = self.opts["threads"]
variants = {"medium": {}, "veryfast": {"preset": "veryfast"}, "medium t1": {"threads": 1}, "veryfast t1": {"preset": "veryfast", "threads": 1}}
res = {}
for r in range(3):
    for name, o in variants.items():
        VW.opts = o; P.VideoWriter = VW
        for label, p, ovl, th in [("ov", pipe, True, 1), ("eager2", tpipe, False, 2)]:
            torch.set_num_threads(th)
            run = timed_render(p, media, P.with_overrides(base, overlap=ovl), Path("/tmp/x.mp4"))
            res.setdefault((name, label), []).append(run["row"]["frames_per_second"])
        torch.set_num_threads(1)
for name in variants:
    ov_, e_ = res[name, "ov"], res[name, "eager2"]
    print(f"{name:12s} ov {[round(x) for x in ov_]} eager2 {[round(x) for x in e_]} ratio {[round(a/b,2) for a,b in zip(ov_,e_)]}")
