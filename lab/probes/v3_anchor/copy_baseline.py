"""PSNR of copying frame 0 over frames 10..40 of the first 3 test clips (the diffusability probe's frames)."""
from pathlib import Path

import numpy as np

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.metrics import psnr

h = Path.home() / "emo-runs"
data = HeldOutData(str(h / "corpus/shards"), str(h / "corpus/synth"))
ps = []
for e in list(data.entries("test"))[:3]:
    c = data.load(e); fr = c.frames[10:50:10]
    ps.append(psnr(np.repeat(c.frames[:1], len(fr), 0), fr))
print("copy frame 0 -> frames 10..40 of the probe's 3 clips: %.2f dB" % np.concatenate(ps).mean())
